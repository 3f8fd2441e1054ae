"""The HTTP service around one Transcriber: the original `/recognition` API (recognition.py), OpenAI's
audio API (openai_api.py) and a web page with `/docs` and `/health` (web.py).

`create_app(transcriber, ServerSettings(...))` builds the FastAPI app; infer_server.py only parses
arguments, loads the model and runs uvicorn, so tests can build the same app around any model.
"""
from utils.apps.server.app import create_app
from utils.apps.server.settings import ServerSettings

__all__ = ["create_app", "ServerSettings"]
