"""server/control_plane"""
