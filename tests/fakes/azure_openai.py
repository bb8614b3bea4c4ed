"""A fake Azure OpenAI Realtime (GA) endpoint: the fake OpenAI server behind Azure's front door.

What Azure does differently at the upgrade, and only that (the protocol after
it is OpenAI GA, :mod:`fakes.openai_realtime`):

* path ``/openai/v1/realtime`` with ``?model=<deployment>``; an unknown
  deployment → 404 ``DeploymentNotFound``; an ``api-version`` query on the GA
  path → 404 (the preview shape mixed with GA, as Azure answers it);
* credentials in the ``api-key`` header; a missing or wrong one → 401 with
  Azure's ``Access denied`` body.  ``Authorization: Bearer sk-…`` (an OpenAI
  key) is not an Azure credential.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from trio_websocket import WebSocketRequest

from fakes.openai_realtime import FakeRealtime, _Conn

API_KEY = "azkey0123456789abcdef0123456789ab"
DEPLOYMENT = "my-realtime"


class FakeAzureRealtime(FakeRealtime):
    def __init__(self, api_key: str = API_KEY, deployment: str = DEPLOYMENT, **kwargs: object) -> None:
        super().__init__(api_key, **kwargs)  # type: ignore[arg-type]
        self.deployment = deployment

    async def serve(self, nursery):  # type: ignore[no-untyped-def]
        url = await super().serve(nursery)
        self.url = url.replace("/v1/realtime", "/openai/v1/realtime")
        return self.url

    async def _handle(self, request: WebSocketRequest) -> None:
        headers = self.upgrade(request)
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        if parts.path != "/openai/v1/realtime" or "api-version" in query:
            await request.reject(404, body=b'{"error":{"code":"404","message":"Resource not found"}}')
            return
        if self.reject_status is not None:
            await request.reject(self.reject_status, body=b'{"error":{"message":"refused by test"}}')
            return
        if headers.get("api-key") != self.api_key:
            body = {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong "
                              "API endpoint. Make sure to provide a valid key for an active subscription and use a "
                              "correct regional API endpoint for your resource."}}
            await request.reject(401, body=json.dumps(body).encode())
            return
        if query.get("model") != [self.deployment]:
            body = {"error": {"code": "DeploymentNotFound",
                              "message": "The API deployment for this resource does not exist."}}
            await request.reject(404, body=json.dumps(body).encode())
            return
        ws = await request.accept()
        await self.connected(lambda: _Conn(self, ws, self.deployment, self.connections).run())
