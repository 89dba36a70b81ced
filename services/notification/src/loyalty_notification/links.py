"""The links inside messages, served over HTTP (aiohttp): RFC 8058 one-click unsubscribe and the
open-tracking pixel. They are reached by mail clients and customers, never by other services, so a
request carries no credentials: a signed token in the link names the tenant and what it is about
(domain/signing.py), and each request runs bound to that tenant.

- `POST /unsubscribe?token=...` with the form body `List-Unsubscribe=One-Click` (RFC 8058 §3.2, as a
  mail client sends it) withdraws the marketing consent in profile, as the Unsubscribe RPC does.
  Withdrawing twice is harmless, so every POST is its own change (a fresh idempotency key): a link
  clicked again after the customer opted in once more unsubscribes again.
- `GET /unsubscribe?token=...` changes nothing (link scanners and prefetchers GET every link; RFC
  8058 §3.2): it answers a page whose button sends the same POST.
- `GET /open?token=...` records the message's first open (`notification.opened`) and answers a 1x1
  GIF that no cache keeps.
A forged or altered token is 400 with the stable reason; profile or the database unreachable is 503
with Retry-After (the link works again later).
"""

import asyncio
import base64
import html
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from loyalty_notification import app
from loyalty_notification.commands import RecordOpen, Unsubscribe
from loyalty_notification.directory import Directory
from loyalty_notification.domain import signing
from loyalty_runtime.context import CallContext, bind_call, check_tenant, unbind_call
from loyalty_runtime.db import as_domain_error
from loyalty_runtime.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, Reason
from loyalty_runtime.uow import UnitsOfWork

log = logging.getLogger("loyalty.notification.links")

ONE_CLICK = ("List-Unsubscribe", "One-Click")
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
# A form body of a few fields; anything larger is not a one-click unsubscribe.
MAX_BODY_BYTES = 4096
RETRY_AFTER_SECONDS = "30"
PRINCIPAL = "notification-links"


def _refused(reason: Reason, field: str, status: int = 400) -> web.Response:
    return web.json_response({"reason": reason.name, "field": field}, status=status, headers=NO_STORE)


def _unavailable() -> web.Response:
    return web.json_response(
        {"reason": Reason.UNAVAILABLE.name},
        status=503,
        headers={**NO_STORE, "Retry-After": RETRY_AFTER_SECONDS},
    )


def _tenant(tenant_id: str) -> str | None:
    try:
        return check_tenant(tenant_id)
    except DomainError:
        return None


class Links:
    def __init__(
        self,
        units: UnitsOfWork,
        directory: Directory,
        *,
        unsubscribe_secret: str,
        tracking_secret: str,
        timeout_seconds: float,
    ) -> None:
        self.units = units
        self.directory = directory
        self.unsubscribe_secret = unsubscribe_secret
        self.tracking_secret = tracking_secret
        self.timeout = timeout_seconds

    def application(self, prefix: str = "") -> web.Application:
        """The routes at the root and, given the public URL's path ("/links"), under it too: an
        ingress may forward the path as it came (the standard Prefix match) or strip it."""
        application = web.Application(client_max_size=MAX_BODY_BYTES)
        for base in dict.fromkeys(["", prefix.rstrip("/")]):
            application.add_routes(
                [
                    web.post(f"{base}/unsubscribe", self.unsubscribe),
                    web.get(f"{base}/unsubscribe", self.unsubscribe_page),
                    web.get(f"{base}/open", self.opened),
                ]
            )
        return application

    async def _as_tenant(self, tenant_id: str, work: Callable[[], Awaitable[web.Response]]) -> web.Response:
        """`work` bound to the token's tenant with this service's deadline; a dependency that does not
        answer is 503."""
        token = bind_call(CallContext(tenant_id, PRINCIPAL, deadline=time.monotonic() + self.timeout))
        try:
            async with asyncio.timeout(self.timeout):
                return await work()
        except Exception as error:
            if not isinstance(error, TimeoutError) and as_domain_error(error) is None:
                raise  # a bug: aiohttp logs it and answers 500
            log.warning("link not served", extra={"fields": {"error_type": type(error).__name__}})
            return _unavailable()
        finally:
            unbind_call(token)

    def _unsubscription(self, request: web.Request) -> signing.Unsubscription | None:
        subject = signing.read_unsubscribe_token(self.unsubscribe_secret, request.query.get("token", ""))
        return subject if subject and _tenant(subject.tenant_id) else None

    async def unsubscribe(self, request: web.Request) -> web.Response:
        subject = self._unsubscription(request)
        if subject is None:
            return _refused(Reason.UNSUBSCRIBE_TOKEN_INVALID, "token")
        try:
            form = await request.post()
        except (ValueError, web.HTTPException):
            form = {}
        if form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
            return _refused(Reason.INVALID_ARGUMENT, ONE_CLICK[0])
        command = Unsubscribe(f"link:{uuid.uuid4()}", request.query["token"])

        async def withdraw() -> web.Response:
            try:
                await app.unsubscribe(self.directory, command, self.unsubscribe_secret, subject.tenant_id)
            except InvalidArgument as refused:  # the token names no customer of its tenant
                return _refused(refused.reason, "token")
            return web.Response(text="You are unsubscribed.", headers=NO_STORE)

        return await self._as_tenant(subject.tenant_id, withdraw)

    async def unsubscribe_page(self, request: web.Request) -> web.Response:
        if self._unsubscription(request) is None:
            return _refused(Reason.UNSUBSCRIBE_TOKEN_INVALID, "token")
        # Relative to this page, so a path prefix the ingress adds stays on the way back.
        action = html.escape(f"?token={request.query['token']}", quote=True)
        page = (
            '<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head><body>'
            f'<form method="post" action="{action}">'
            f'<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">'
            '<button type="submit">Unsubscribe</button></form></body></html>'
        )
        return web.Response(text=page, content_type="text/html", headers=NO_STORE)

    async def opened(self, request: web.Request) -> web.Response:
        subject = signing.read_tracking_token(self.tracking_secret, request.query.get("token", ""))
        if subject is None or not _tenant(subject.tenant_id):
            return _refused(Reason.TRACKING_TOKEN_INVALID, "token")
        try:
            command = RecordOpen(str(uuid.UUID(subject.message_id)))
        except ValueError:
            return _refused(Reason.TRACKING_TOKEN_INVALID, "token")

        async def record() -> web.Response:
            try:
                async with self.units.change() as uow:
                    await app.record_open(uow, command)
            except (NotFound, FailedPrecondition):
                pass  # a message gone or never sent: the pixel is still a pixel
            return web.Response(body=PIXEL, content_type="image/gif", headers=NO_STORE)

        return await self._as_tenant(subject.tenant_id, record)


async def serve_links(links: Links, host: str, port: int, stopping, *, prefix: str = "") -> None:
    """Serve until `stopping` is set; requests in flight get a moment to finish."""
    runner = web.AppRunner(
        links.application(prefix), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("links listening", extra={"fields": {"port": port}})
        await stopping.wait()
    except OSError as error:
        # gRPC keeps serving: messages still go out, their links answer from the other replicas.
        log.error("links not served", extra={"fields": {"port": port, "error_type": type(error).__name__}})
    finally:
        await runner.cleanup()
