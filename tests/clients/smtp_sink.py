"""A real SMTP server on 127.0.0.1 for iewatch's e-mail tests: aiosmtpd with STARTTLS
required (`starttls`) or TLS from the first byte (`tls`), AUTH required over TLS for one
user, each accepted message written to OUTDIR as NNN.eml (and the client's port, NNN.peer). Prints "ready" once it listens;
runs until killed.

Arguments: mode, port, certificate PEM, key PEM, user, password, outdir, and optionally
a behaviour: `accept` (the default), `refuse-first` (550 5.7.1 to the first message, then
250), `defer-first` (451 4.3.0 to the first, then 250), `silent-data` (takes DATA and never
answers it: a relay that hangs mid-conversation), `silent-first` (never answers the first
message's DATA, having written OUTDIR/held; accepts the rest).
"""
import asyncio
import itertools
import pathlib
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, port, cert, key, user, password, outdir = sys.argv[1:8]
behaviour = sys.argv[8] if len(sys.argv) > 8 else "accept"
out = pathlib.Path(outdir)
counter = itertools.count(1)
answered = itertools.count(0)


class Sink:
    async def handle_DATA(self, server, session, envelope):
        first = next(answered) == 0
        if behaviour == "silent-data" or (behaviour == "silent-first" and first):
            (out / "held").write_text("DATA of the first message taken, never answered\n")
            await asyncio.sleep(3600)
        if behaviour == "refuse-first" and first:
            return "550 5.7.1 Message refused by policy"
        if behaviour == "defer-first" and first:
            return "451 4.3.0 Try again later"
        number = next(counter)
        # The client's port: messages that share it came on one connection.
        (out / f"{number:03}.peer").write_text(f"{session.peer[1]}\n")
        (out / f"{number:03}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(), auth_data.password.decode()) == (user, password)
    return AuthResult(success=ok)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
common = dict(
    hostname="127.0.0.1",
    port=int(port),
    authenticator=authenticate,
    auth_required=True,
)
if mode == "tls":
    # TLS from the first byte: aiosmtpd does not count it as STARTTLS, so AUTH is not
    # made to wait for one.
    controller = Controller(Sink(), ssl_context=context, auth_require_tls=False, **common)
else:
    controller = Controller(
        Sink(), tls_context=context, require_starttls=True, auth_require_tls=True, **common)
controller.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
