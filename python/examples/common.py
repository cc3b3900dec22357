"""Helpers shared by the example programs: identities, the local app, output formatting and the
command-line options (every option can also be set as an environment variable ``SLIM_<OPTION>``)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import click

import slim_bindings


class color:
    """ANSI escape codes."""

    PURPLE = "\033[95m"
    CYAN = "\033[96m"
    DARKCYAN = "\033[36m"
    BLUE = "\033[94m"
    GREEN = "\033[92m"
    YELLOW = "\033[93m"
    RED = "\033[91m"
    BOLD = "\033[1m"
    UNDERLINE = "\033[4m"
    END = "\033[0m"


def format_message(message1: str, message2: str = "") -> str:
    """``message1`` capitalised and padded to 45 columns (bold cyan), then ``message2``."""
    return f"{color.BOLD}{color.CYAN}{message1.capitalize():<45}{color.END}{message2}"


def format_message_print(message1: str, message2: str = "") -> None:
    """Prints :func:`format_message` (flushed, so piped output shows up at once)."""
    print(format_message(message1, message2), flush=True)


def split_id(id: str) -> slim_bindings.PyName:
    """``"org/ns/app"`` → ``PyName("org", "ns", "app")``."""
    try:
        organization, namespace, app = id.split("/")
    except ValueError:
        print("Error: IDs must be in the format organization/namespace/app-or-stream.")
        raise
    return slim_bindings.PyName(organization, namespace, app)


def shared_secret_identity(
    identity: str, secret: str
) -> tuple[slim_bindings.PyIdentityProvider, slim_bindings.PyIdentityVerifier]:
    """A provider/verifier pair for a shared secret (for tests and demos only)."""
    provider = slim_bindings.PyIdentityProvider.SharedSecret(identity=identity, shared_secret=secret)
    verifier = slim_bindings.PyIdentityVerifier.SharedSecret(identity=identity, shared_secret=secret)
    return provider, verifier


def _audience_list(aud: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if aud is None:
        return None
    if isinstance(aud, str):
        return [a for a in (part.strip() for part in aud.split(",")) if a]
    return list(aud)


def _jwt_claims(jwt_path: str) -> dict[str, Any]:
    """The claims of the JWT in ``jwt_path``, decoded without checking the signature (the
    receivers check it); a ``ValueError`` naming the file when it is not a JWT."""
    try:
        with open(jwt_path) as f:
            token = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read the JWT file {jwt_path}: {e.strerror}") from None
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three dot-separated parts")
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
        if not isinstance(claims, dict):
            raise ValueError("the claims are not a JSON object")  # noqa: TRY004 - reported as bad input below
    except ValueError as e:
        raise ValueError(f"{jwt_path} does not hold a JWT ({e})") from None
    return claims


def check_jwt_audience(jwt_path: str, audience: str | list[str] | None) -> None:
    """Refuses, with a message saying why, a JWT that the other apps (verifying with the same
    ``--audience``) would reject: one issued for none of the audiences, or already expired."""
    wanted = _audience_list(audience) or []
    claims = _jwt_claims(jwt_path)
    aud = claims.get("aud")
    token_aud = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    if not any(a in wanted for a in token_aud):
        have = ", ".join(map(str, token_aud)) if token_aud else "no audience"
        raise ValueError(
            f"The JWT in {jwt_path} is issued for {have}, not for the audience "
            f"{', '.join(wanted) or '(empty)'} given with --audience: peers would refuse its messages."
        )
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp < time.time():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(exp))
        raise ValueError(f"The JWT in {jwt_path} expired at {when}.")


def jwt_identity(
    jwt_path: str,
    jwk_path: str,
    iss: str | None = None,
    sub: str | None = None,
    aud: str | list[str] | None = None,
) -> tuple[slim_bindings.PyIdentityProvider, slim_bindings.PyIdentityVerifier]:
    """A static JWT (e.g. a SPIRE JWT-SVID file) checked against a SPIRE JWKS bundle
    (``{trust_domain: base64(JWKS)}``; the first entry is used)."""
    print(f"Using JWk file: {jwk_path}")
    try:
        with open(jwk_path) as f:
            bundle = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read the bundle file {jwk_path}: {e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"{jwk_path} is not JSON ({e})") from None
    if not isinstance(bundle, dict) or not bundle:
        raise ValueError(f"{jwk_path}: expected a JSON object {{trust_domain: base64 JWKS}}")
    try:
        jwks = base64.b64decode(next(iter(bundle.values()))).decode("utf-8")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{jwk_path}: the first trust domain's value is not base64 text ({e})") from None
    provider = slim_bindings.PyIdentityProvider.StaticJwt(path=jwt_path)
    verifier = slim_bindings.PyIdentityVerifier.Jwt(
        public_key=slim_bindings.PyKey(
            algorithm=slim_bindings.PyAlgorithm.RS256,
            format=slim_bindings.PyKeyFormat.Jwks,
            key=slim_bindings.PyKeyData.Content(content=jwks),
        ),
        issuer=iss,
        audience=_audience_list(aud),
        subject=sub,
    )
    return provider, verifier


async def create_local_app(
    local: str,
    slim: dict[str, Any],
    remote: str | None = None,
    enable_opentelemetry: bool = False,
    shared_secret: str | None = None,
    jwt: str | None = None,
    bundle: str | None = None,
    audience: str | list[str] | None = None,
) -> slim_bindings.Slim:
    """Creates the app ``local`` (``org/ns/app``) and connects it to the node ``slim`` (a client
    config dict). Identity: JWT when ``jwt``, ``bundle`` and ``audience`` are given, otherwise the
    shared secret. ``remote`` is accepted for symmetry with the command line and not used."""
    slim_bindings.init_tracing(
        {
            "log_level": "info",
            "opentelemetry": {
                "enabled": enable_opentelemetry,
                "grpc": {"endpoint": "http://localhost:4317"},
            },
        }
    )

    if jwt and bundle and audience:
        check_jwt_audience(jwt, audience)
        provider, verifier = jwt_identity(jwt, bundle, aud=audience)
    elif jwt or bundle:
        raise ValueError("JWT identity needs --jwt, --bundle and --audience together.")
    elif shared_secret:
        provider, verifier = shared_secret_identity(identity=local, secret=shared_secret)
    else:
        raise ValueError("Either JWT or bundle must be provided, or a shared secret.")

    local_name = split_id(local)
    local_app = await slim_bindings.Slim.new(local_name, provider, verifier)
    format_message_print(f"{local_app.get_id()}", "Created app")

    _ = await local_app.connect(slim)
    format_message_print(f"{local_app.get_id()}", f"Connected to {slim['endpoint']}")
    return local_app


async def app_from_options(options: dict[str, Any]) -> slim_bindings.Slim:
    """:func:`create_local_app` with the command-line options of :func:`common_options` (or the
    MCP examples' options)."""
    return await create_local_app(
        options["local"],
        options["slim"],
        remote=options.get("remote"),
        enable_opentelemetry=options["enable_opentelemetry"],
        shared_secret=options["shared_secret"],
        jwt=options["jwt"],
        bundle=options["bundle"],
        audience=options["audience"],
    )


def run_example(main: Callable[[], Coroutine[Any, Any, int]], *errors: type[Exception]) -> NoReturn:
    """Runs ``main()`` and exits with its code: 130 on Ctrl-C, 1 (with the message on stderr) on a
    ``ValueError``, a ``SlimError`` or one of ``errors``."""
    caught: tuple[type[Exception], ...] = (ValueError, slim_bindings.SlimError, *errors)
    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    except caught as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)


def parse_json_object(
    ctx: click.Context, param: click.Parameter, value: str | dict[str, Any]
) -> dict[str, Any]:
    """Click callback for options that take a JSON object on the command line (or a dict default)."""
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise click.BadParameter(f"{value} is not valid JSON", ctx, param) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{value} is not a JSON object", ctx, param)
    return parsed


DEFAULT_SLIM_CONFIG: dict[str, Any] = {"endpoint": "http://127.0.0.1:46357", "tls": {"insecure": True}}


def _connection_options() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The options of every example: who this app is, which node, which identity."""
    return [
        click.option("--local", type=str, required=True, help="Local ID: organization/namespace/application"),
        click.option(
            "--remote",
            type=str,
            help="Remote ID: organization/namespace/application (the channel for multicast)",
        ),
        click.option(
            "--slim",
            default=json.dumps(DEFAULT_SLIM_CONFIG),
            metavar="DICT",
            callback=parse_json_object,
            help="SLIM node client configuration (JSON)",
        ),
        click.option(
            "--enable-opentelemetry",
            is_flag=True,
            help="Export traces to OpenTelemetry at http://localhost:4317",
        ),
        click.option("--shared-secret", type=str, help="Shared secret for authentication (testing only)"),
        click.option("--jwt", type=str, help="Path to a static JWT token file"),
        click.option("--bundle", type=str, help="Path to a SPIRE JWKS trust bundle"),
        click.option(
            "--audience", type=str, help="Audience for JWT verification (comma-separated for several)"
        ),
    ]


def _command(
    function: Callable[..., Any], options: list[Callable[[Callable[..., Any]], Callable[..., Any]]]
) -> click.Command:
    for option in reversed(options):
        function = option(function)
    return click.command(context_settings={"auto_envvar_prefix": "SLIM"})(function)


def common_options(function: Callable[..., Any]) -> click.Command:
    """The options every example takes; the result is a click command reading ``SLIM_*`` env vars."""
    return _command(
        function,
        [
            *_connection_options(),
            click.option(
                "--invites",
                type=str,
                multiple=True,
                help="Participant to invite to the multicast session (repeatable)",
            ),
            click.option("--enable-mls", is_flag=True, help="Enable MLS end-to-end encryption"),
        ],
    )


def mcp_server_options(function: Callable[..., Any]) -> click.Command:
    """The options of the MCP server example: those of every example (``--local`` is the name
    the server answers to)."""
    return _command(function, _connection_options())


def mcp_client_options(function: Callable[..., Any]) -> click.Command:
    """The options of the MCP client example: those of every example (``--remote`` is the
    server), and ``--mls/--no-mls`` (on by default: MCP over SLIM encrypts end to end unless told
    otherwise)."""
    return _command(
        function,
        [
            *_connection_options(),
            click.option(
                "--mls/--no-mls",
                default=True,
                help="MLS end-to-end encryption of the MCP session (default on)",
            ),
        ],
    )


def p2p_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--message`` and ``--iterations`` for the point-to-point example (apply before
    :func:`common_options`)."""
    function = click.option(
        "--iterations", type=int, default=10, help="Number of messages to send, one per second"
    )(function)
    function = click.option("--message", type=str, help="Message to send (sender mode)")(function)
    return function
