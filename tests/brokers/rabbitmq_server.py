"""rabbitmq-server as a private Erlang node: own epmd, ports, cookie, Mnesia and log folders."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.brokers.amqp_probe import amqp_login
from tests.brokers.binaries import epmd_binary, rabbitmq_script
from tests.brokers.procfs import free_port, port_listens
from tests.brokers.server import Launch, TestServer

# Spliced into Erlang source by add_vhost: no quotes, no escapes.
_VHOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


class RabbitMqServer(TestServer):
    """One RabbitMQ node named `srvthreds-<port>@localhost`, everything under `root`.

    Its epmd runs on its own port (ERL_EPMD_PORT), started first and stopped last, so nodes of
    parallel sessions, a Debian system instance and its epmd on 4369 never meet. The node's
    Mnesia folder survives `stop()`/`kill()`: durable queues and persistent messages are back
    after `start()`.
    """

    name = "rabbitmq"
    start_timeout = 120.0
    stop_timeout = 60.0

    def __init__(self, *, root: Path, port: int | None = None) -> None:
        super().__init__(root=root, port=port)
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node_name = f"srvthreds-{self.port}@localhost"
        self._discarded: list[str] = []

    @property
    def url(self) -> str:
        return self.vhost_url("/")

    def vhost_url(self, vhost: str) -> str:
        # The default guest user may log in from loopback only, which is all these tests use.
        path = "%2F" if vhost == "/" else vhost
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{path}"

    def environment(self) -> dict[str, str]:
        """The environment rabbitmq-server and rabbitmqctl share to reach this node."""
        return {
            **os.environ,
            "HOME": str(self.root / "home"),  # the Erlang cookie lives in $HOME
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_LOGS": "-",  # to stdout, which is the server's log file
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.root / "plugins-expand"),
            "ERL_INETRC": str(self.root / "erl_inetrc"),
        }

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Runs `rabbitmqctl -q ARGS` against this node; returns its output."""
        result = subprocess.run(
            [str(rabbitmq_script("rabbitmqctl")), "-q", "-n", self.node_name, *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.node_name} failed "
                f"(exit {result.returncode}): {result.stdout}{result.stderr}"
            )
        return result.stdout

    def add_vhost(self, vhost: str) -> None:
        """Creates `vhost` with full rights for guest, and deletes vhosts given to
        `discard_vhost` since the last call.

        One `rabbitmqctl eval` does it all: every rabbitmqctl run boots an Erlang VM (about
        1-3 s here), and add_vhost + set_permissions + delete_vhost would be three.
        """
        names = [vhost, *self._discarded]
        if bad := [name for name in names if not _VHOST_NAME.fullmatch(name)]:
            raise ValueError(f"vhost names must match {_VHOST_NAME.pattern}: {bad}")
        deletes = "".join(
            f'rabbit_vhost:delete(<<"{old}">>, <<"tests">>), ' for old in self._discarded
        )
        self.ctl(
            "eval",
            f'{deletes}ok = rabbit_vhost:add(<<"{vhost}">>, <<"tests">>), '
            f'ok = rabbit_auth_backend_internal:set_permissions(<<"guest">>, <<"{vhost}">>, '
            '<<".*">>, <<".*">>, <<".*">>, <<"tests">>).',
        )
        self._discarded.clear()

    def discard_vhost(self, vhost: str) -> None:
        """Marks `vhost` for deletion with the next `add_vhost` (or with the node's folder)."""
        self._discarded.append(vhost)

    def _prepare(self) -> None:
        for folder in ("home", "mnesia", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        config = [
            f"listeners.tcp.1 = 127.0.0.1:{self.port}",
            "loopback_users.guest = true",
            # The tests' folders sit on a shared disk: the default 50 MB alarm is enough, and
            # a lower one than RabbitMQ's would hide a full disk as publish timeouts.
            "disk_free_limit.absolute = 50MB",
        ]
        (self.root / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        # No plugins at all: the management plugin would open port 15672.
        (self.root / "enabled_plugins").write_text("[].\n")
        # Names resolve from /etc/hosts only: Erlang's resolver would otherwise ask the DNS
        # servers of /etc/resolv.conf, off the loopback, and wait for their timeouts.
        (self.root / "erl_inetrc").write_text("{lookup, [file]}.\n")

    def _launches(self) -> list[Launch]:
        env = self.environment()
        epmd = [str(epmd_binary()), "-port", str(self.epmd_port), "-address", "127.0.0.1"]
        server_env = {
            **env,
            # Makes the script exec the VM instead of forking it behind a signal-relaying
            # shell: the VM is then this process's child and dies with it (PDEATHSIG).
            "RABBITMQ_ALLOW_INPUT": "true",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-noinput -start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        }
        return [
            Launch("epmd", epmd, env, ready=lambda: port_listens(self.epmd_port)),
            Launch("rabbitmq-server", [str(rabbitmq_script("rabbitmq-server"))], server_env),
        ]

    def _ready(self) -> bool:
        try:
            amqp_login(self.port, timeout=5.0)
        except (OSError, ConnectionError):
            return False
        return True
