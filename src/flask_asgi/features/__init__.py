"""Features floor: streaming, server-sent events, background tasks, broadcast. Stands on
the protocol and ground floors."""
