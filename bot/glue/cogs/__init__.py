"""Discord glue: each cog turns interactions into calls on the pure parts."""
