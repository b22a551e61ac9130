"""Who may use a service's HTTP API: the one bearer-token check (INTROSPECT_API_TOKEN).

The aggregator's API asks for `Authorization: Bearer <token>`; its report page also takes
the token from a cookie, since a browser that opens a page cannot send the header. Tokens
are compared in constant time. With no token set, routes are left as they are.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_given(request: web.Request, token: str, cookie: str | None = None) -> bool:
    """Whether `request` carries `token`: as a bearer token, or in the cookie named `cookie`."""
    expected = f"Bearer {token}".encode()
    given = [request.headers.get("Authorization", "")]
    if cookie is not None:
        given.append(f"Bearer {request.cookies.get(cookie, '')}")
    return any(hmac.compare_digest(value.encode(), expected) for value in given)


def bearer_token_required(
    token: str | None, *, cookie: str | None = None, refusal: Callable[[], web.StreamResponse] | None = None
) -> Callable[[Route], Route]:
    """A route wrapper answering 401 (or `refusal()`: a login form, say) unless the request
    carries the token (`token_given`)."""

    def guard(route: Route) -> Route:
        if token is None:
            return route

        async def guarded(request: web.Request) -> web.StreamResponse:
            if token_given(request, token, cookie):
                return await route(request)
            if refusal is not None:
                return refusal()
            raise web.HTTPUnauthorized(
                text="this API needs its bearer token: set INTROSPECT_API_TOKEN\n",
                headers={"WWW-Authenticate": 'Bearer realm="introspect"'},
            )

        return guarded

    return guard
