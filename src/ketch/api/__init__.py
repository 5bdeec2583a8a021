"""The Engine API server: Docker's REST API over HTTP/1.1 on a unix socket.

``server.serve(engine, socket_path)`` listens and runs one task per connection;
``connection`` wraps h11 for one connection (requests, JSON replies, chunked streams,
hijack); ``routes`` maps each route to an ``Engine`` call; ``streams`` holds the routes
whose replies stream (attach, wait, image pull); ``errors`` maps ketch's error classes to
HTTP status codes.
"""

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"
