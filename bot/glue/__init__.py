"""Discord glue: the client, cogs, rendering, the error handler, suggestions."""
