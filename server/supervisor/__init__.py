"""server/supervisor"""
