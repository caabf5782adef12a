"""
What the repository's Dockerfile and systemd units say, read from the files
themselves so the tests that check and run them cannot drift from them: the
Dockerfile's instructions, the image's environment, its entry command, its
health check; a unit's settings.
"""

from __future__ import annotations

import json
import pathlib
import shlex

import attr

DOCKERFILE = pathlib.Path(__file__).resolve().parents[1] / "Dockerfile"
CONF = DOCKERFILE.parent / "conf"


def unit_setting(unit, key):
    """The values of ``key=`` in ``conf/<unit>``, continuation lines joined."""
    text = (CONF / unit).read_text().replace("\\\n", " ")
    return [line.split("=", 1)[1].strip() for line in text.splitlines()
            if line.startswith(key + "=")]


def instructions(text):
    """``[(KEYWORD, arguments)]``: continuation lines joined, comment lines dropped."""
    result = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue  # Docker drops comment lines, inside a continuation too
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def exec_form(arguments):
    """A JSON-array argument (``CMD ["a", "b"]``) as a list; shell form is refused."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"not the exec form: {arguments}"
    return value


@attr.s(frozen=True)
class Image:
    """The parts of the Dockerfile that decide how the image runs."""

    base = attr.ib()
    env = attr.ib()
    workdir = attr.ib()
    user = attr.ib()
    volumes = attr.ib()
    exposed = attr.ib()
    command = attr.ib()
    healthcheck = attr.ib()
    healthcheck_options = attr.ib()
    stop_signal = attr.ib()

    @classmethod
    def read(cls, path=DOCKERFILE):
        found = {"env": {}, "volumes": [], "exposed": [], "entrypoint": [], "cmd": [],
                 "healthcheck": None, "healthcheck_options": {}, "base": None,
                 "workdir": "/", "user": "root", "stop_signal": "SIGTERM"}
        for keyword, arguments in instructions(pathlib.Path(path).read_text()):
            if keyword == "FROM":
                found["base"] = arguments.split()[0]
            elif keyword == "ENV":
                for assignment in shlex.split(arguments):
                    key, _, value = assignment.partition("=")
                    found["env"][key] = value
            elif keyword == "WORKDIR":
                found["workdir"] = arguments
            elif keyword == "USER":
                found["user"] = arguments
            elif keyword == "VOLUME":
                found["volumes"] += (exec_form(arguments) if arguments.startswith("[")
                                     else arguments.split())
            elif keyword == "EXPOSE":
                found["exposed"] += [int(port.split("/")[0]) for port in arguments.split()]
            elif keyword == "ENTRYPOINT":
                found["entrypoint"] = exec_form(arguments)
            elif keyword == "CMD":
                found["cmd"] = exec_form(arguments)
            elif keyword == "STOPSIGNAL":
                found["stop_signal"] = arguments
            elif keyword == "HEALTHCHECK":
                options, _, command = arguments.partition("CMD ")
                found["healthcheck"] = exec_form(command)
                found["healthcheck_options"] = dict(
                    option.lstrip("-").split("=", 1) for option in options.split())
        entrypoint, cmd = found.pop("entrypoint"), found.pop("cmd")
        return cls(command=entrypoint + cmd, **found)
