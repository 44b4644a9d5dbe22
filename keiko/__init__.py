"""Keiko's command line (`keiko`) and Python client (`from keiko.client import Keiko`).

Nothing heavy is imported here: `keiko --help` must answer at once, while the client pulls
the API's pydantic models (and with them PyTorch) only when it is used."""
