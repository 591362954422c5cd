#!/usr/bin/env python3
"""Verifies a Sigil access token with PyJWT, independently of the Rust code.

Usage: verify_token.py JWKS_URL ISSUER AUDIENCE < token

Fetches the JWKS over HTTP, picks the key by the token's kid, and takes the
algorithm from the key (never from the token header), as RFC 8725 asks. Prints
the claims as JSON and exits 0 when the token is valid; exits 1 with the reason
otherwise.
"""
import json
import sys
import urllib.request

import jwt

REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]


def main() -> int:
    jwks_url, issuer, audience = sys.argv[1:4]
    token = sys.stdin.read().strip()
    with urllib.request.urlopen(jwks_url, timeout=10) as response:
        media_type = response.headers.get("Content-Type")
        jwks = json.load(response)
    if media_type != "application/jwk-set+json":
        return fail(f"JWKS served as {media_type!r}")
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        return fail(f"typ is {header.get('typ')!r}, not at+jwt")
    matches = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    if len(matches) != 1:
        return fail(f"kid {header.get('kid')!r} is not published exactly once")
    jwk = matches[0]
    try:
        claims = jwt.decode(
            token,
            jwt.PyJWK(jwk).key,
            algorithms=[jwk["alg"]],
            audience=audience,
            issuer=issuer,
            options={"require": REQUIRED},
        )
    except jwt.PyJWTError as e:
        return fail(f"{type(e).__name__}: {e}")
    print(json.dumps(claims))
    return 0


def fail(reason: str) -> int:
    print(reason, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
