"""server/mq"""
