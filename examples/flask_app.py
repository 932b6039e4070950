"""A notes API that trusts tokenward's access tokens (Flask).

With tokenward running (`make run`, on http://127.0.0.1:8000):

    TOKENWARD_ISSUER=http://127.0.0.1:8000 .venv/bin/flask --app examples/flask_app run -p 8003
"""

import os
from typing import Any

from flask import Flask, g

from tokenward.verify import Verifier
from tokenward.verify.flask import require_token


def create_app(verifier: Verifier) -> Flask:
    """The API; ``require_token`` guards each view and puts the claims in ``g.claims``."""
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "verifier_ready": verifier.ready}

    @app.get("/me")
    @require_token(verifier)
    def me() -> dict[str, Any]:
        return {"sub": g.claims.sub, "sid": g.claims.sid}

    @app.get("/notes")
    @require_token(verifier, scopes=["notes:read"])
    def notes() -> dict[str, Any]:
        return {"owner": g.claims.sub, "notes": ["buy milk"]}

    @app.delete("/notes")
    @require_token(verifier, roles=["admin"])
    def purge() -> dict[str, Any]:
        return {"purged_by": g.claims.sub}

    return app


app = create_app(Verifier(issuer=os.environ.get("TOKENWARD_ISSUER", "http://127.0.0.1:8000")))
