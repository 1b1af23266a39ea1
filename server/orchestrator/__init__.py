"""server/orchestrator"""
