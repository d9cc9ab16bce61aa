"""``python -m devstack`` (``make run``): the whole mail system on this machine.

Starts the emulated AWS with the resources of template.yaml, seeds the demo account,
then the gateway with the functions in-process and the SQS event sources of the
template (RelayFunction on OutboundQueue), and runs until Ctrl-C or SIGTERM; then
drains the gateway first (``GATEWAY_DRAIN_SECONDS``, as in the cloud) and stops moto last.

Environment: ``MOTO_PORT`` (4566), the gateway's ``GATEWAY_BIND`` and ``*_PORT``
variables (see gateway/config.py), ``DEMO_DOMAIN`` / ``DEMO_USER`` / ``DEMO_PASSWORD``,
``MAIL_HOSTNAME`` (localhost), ``MAIL_STACK_FILE`` (./.local/stack.json), ``LOG_LEVEL``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from mailcore.settings import Settings
from mailcore.store import Store

from devstack.eventsource import SqsPoller, sqs_mappings
from devstack.stack import DEFAULT_TEMPLATE, DemoAccount, LocalStack, StackInfo, seed_demo, stack_file_path
from devstack.template import Resolver, container_environment, load_template

log = logging.getLogger("devstack")

#: The gateway's container in template.yaml; its environment is the local gateway's too,
#: minus what belongs to the cloud's network: the well-known ports (``*_PORT``), the bind
#: address, and the PROXY protocol the NLB speaks (local clients connect directly).
GATEWAY_CONTAINER = "gateway"
CLOUD_NETWORK_SETTINGS = frozenset({"GATEWAY_BIND", "PROXY_PROTOCOL_LISTENERS"})


def local_parameters(env: Mapping[str, str]) -> dict[str, str]:
    """Template parameters for the local stack: the demo domain is the primary domain."""
    return {
        "MailDomain": env.get("DEMO_DOMAIN") or "example.test",
        "MailHostname": env.get("MAIL_HOSTNAME") or "localhost",
    }


def gateway_environment(template: Path, parameters: Mapping[str, str], info: StackInfo) -> dict[str, str]:
    loaded = load_template(template)
    resolver = Resolver(loaded, parameters=parameters, region=info.region, endpoint=info.endpoint)
    resolver.physical.update(info.resources)
    return {
        key: value
        for key, value in container_environment(loaded, GATEWAY_CONTAINER, resolver).items()
        if key not in CLOUD_NETWORK_SETTINGS and not key.endswith("_PORT")
    }


async def start_gateway(info: StackInfo) -> Any:
    from gateway.config import GatewayConfig
    from gateway.functions import FunctionClient, InProcessTransport
    from gateway.server import Gateway

    gateway = Gateway(GatewayConfig.from_env(), FunctionClient(InProcessTransport(info.functions)))
    await gateway.start()
    return gateway


def _credentials(info: StackInfo) -> dict[str, str]:
    env = info.aws_environment
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}


def start_event_sources(template: Path, info: StackInfo, stop: threading.Event) -> list[threading.Thread]:
    """Poll each queue that template.yaml maps to a function (RelayFunction on OutboundQueue)."""
    from gateway.functions import InProcessTransport

    transport = InProcessTransport(info.functions)
    sqs = boto3.client("sqs", endpoint_url=info.endpoint, region_name=info.region, **_credentials(info))
    threads = []
    for mapping in sqs_mappings(load_template(template)):
        poller = SqsPoller(
            sqs,
            info.resources[mapping.queue],
            functools.partial(transport.invoke, mapping.function),
            mapping.batch_size,
        )
        thread = threading.Thread(target=poller.run_until, args=(stop,), name=f"sqs-{mapping.function}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _mailctl_command() -> str:
    script = Path(sys.executable).parent / "mailctl"
    if not script.exists():
        return f"{sys.executable} -m mailctl"
    try:
        return f"{script.relative_to(Path.cwd())}"
    except ValueError:
        return str(script)


def banner(info: StackInfo, demo: DemoAccount, listening: Mapping[str, tuple[str, int]]) -> str:
    rows = [("emulated AWS (moto)", f"{info.endpoint}  region {info.region}")]
    rows += [(name, f"{host}:{port}") for name, (host, port) in listening.items()]
    rows.append(("demo address", demo.address))
    rows.append(("demo password", demo.password or "(existing user: unchanged)"))
    if info.stack_file is not None:
        rows.append(("stack file", str(info.stack_file)))
    width = max(len(label) for label, _ in rows)
    domain = demo.address.rpartition("@")[2]
    mailctl = _mailctl_command()
    lines = ["Local mail stack is up.", ""]
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    lines += [
        "",
        "Administer it from another shell in this directory (mailctl reads the stack file;",
        "from elsewhere set MAIL_STACK_FILE to it):",
        f"  {mailctl} user list {domain}",
        f"  {mailctl} user add alice@{domain}",
        "Any AWS tool reaches the emulated AWS with",
        f"  AWS_ENDPOINT_URL={info.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing",
    ]
    if not listening:
        lines.append("The gateway is not running (--no-gateway).")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


async def run(template: Path, with_gateway: bool) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    parameters = local_parameters(os.environ)
    stack = LocalStack(template, stack_file=stack_file_path(), parameters=parameters)
    info = stack.start()
    gateway = None
    poll_stop = threading.Event()
    pollers: list[threading.Thread] = []
    try:
        # In-process functions and the gateway read their configuration from here.
        os.environ.update(info.process_environment)
        for key, value in gateway_environment(template, parameters, info).items():
            os.environ.setdefault(key, value)
        demo = seed_demo(Store.build(Settings.from_env(info.environment)))
        if with_gateway:
            gateway = await start_gateway(info)
            pollers = start_event_sources(template, info, poll_stop)
        print(banner(info, demo, gateway.listening if gateway else {}), flush=True)
        await stopping.wait()
        log.info("stopping")
    finally:
        poll_stop.set()
        for poller in pollers:
            poller.join(timeout=5)
        if gateway is not None:
            from gateway.server import drain_seconds

            await gateway.drain(drain_seconds())  # as the container does on SIGTERM
        stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=Path(os.environ.get("MAIL_TEMPLATE") or DEFAULT_TEMPLATE))
    parser.add_argument("--no-gateway", action="store_true", help="run the emulated AWS only")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return asyncio.run(run(args.template, with_gateway=not args.no_gateway))
    except OSError as error:  # a port in use, most often
        print(f"devstack: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
