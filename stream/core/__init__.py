"""The pure core of the stream: no sockets, no asyncio, no paho, psycopg or faust."""
