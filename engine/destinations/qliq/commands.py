"""``courier qliq keys``: the RSA-2048 key pair Qliq encrypts replies with.

Creates the private key file (mode 0600; encrypted when $COURIER_QLIQ_KEY_PASSPHRASE is
set), or reuses the one there, and uploads its public key for ``--sender``. The API key is
read from the environment variable named by ``--api-key-env``, never from the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_KEY_FILE = Path("var/qliq_reply_key.pem")

SUMMARY = "Qliq: generate and upload the reply-encryption key pair"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    keys = actions.add_parser("keys", help="create (or reuse) the reply key pair and upload the public key")
    keys.add_argument("--sender", required=True, help="the Qliq member (e-mail) replies are encrypted for")
    keys.add_argument(
        "--key-file",
        type=Path,
        default=DEFAULT_KEY_FILE,
        help=f"private key file (default: {DEFAULT_KEY_FILE})",
    )
    keys.add_argument(
        "--base-url",
        default=os.environ.get("QLIQ_BASE_URL", "https://capi.qliqsoft.com"),
        help="Qliq API base URL (default: $QLIQ_BASE_URL or https://capi.qliqsoft.com)",
    )
    keys.add_argument(
        "--api-key-env",
        default="QLIQ_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key (default: QLIQ_API_KEY)",
    )
    keys.add_argument("--ca-file", help="CA certificates for a Qliq sandbox over HTTPS")
    keys.add_argument("--no-upload", action="store_true", help="only create the key file")


def run(args: argparse.Namespace) -> int:
    import requests

    from engine.destinations.qliq.keys import (
        generate_key_pair,
        load_private_key,
        passphrase_from_env,
        public_key_pem,
        upload_public_key,
    )

    passphrase = passphrase_from_env()
    if args.key_file.exists():
        public_pem = public_key_pem(load_private_key(args.key_file, passphrase))
        print(f"using the existing private key {args.key_file}")
    else:
        public_pem = generate_key_pair(args.key_file, passphrase)
        print(f"created private key {args.key_file} (mode 0600{', encrypted' if passphrase else ''})")
    if args.no_upload:
        return 0
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        print(f"courier qliq keys: set ${args.api_key_env} to upload the public key", file=sys.stderr)
        return 2
    session = requests.Session()
    session.verify = args.ca_file or True
    try:
        upload_public_key(session, args.base_url, api_key, args.sender, public_pem)
    except requests.RequestException as exc:
        status = exc.response.status_code if exc.response is not None else type(exc).__name__
        print(
            f"courier qliq keys: Qliq refused the public key ({status}); a key can only be set "
            "while the sender is Inactive or Pending",
            file=sys.stderr,
        )
        return 1
    print(f"uploaded the public key for {args.sender}")
    return 0
