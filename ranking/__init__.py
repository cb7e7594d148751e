"""The downstream ranking model that measures what the codes are worth (issue 5)."""
