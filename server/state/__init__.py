"""server/state"""
