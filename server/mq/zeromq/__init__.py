"""server/mq/zeromq"""
