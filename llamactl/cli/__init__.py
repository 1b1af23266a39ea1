"""llamactl/cli"""
