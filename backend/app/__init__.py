"""The HTTP app: routes (`server`), the server's state and the status page."""
