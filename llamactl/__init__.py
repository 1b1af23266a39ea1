"""llamactl"""
