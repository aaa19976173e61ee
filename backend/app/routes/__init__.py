"""The HTTP routes, one module per concern; each takes the app's `AppContext` as a dependency."""
from . import predict, setup, status, training

ROUTERS = (status.router, setup.router, predict.router, training.router)
