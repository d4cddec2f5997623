"""Resolve the Kafka broker's jars from Maven Central, once, into a cache outside the repo."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from rarecvr import settings

POM = Path(__file__).with_name("pom.xml")
#: The broker version, read from the pinned pom so the two cannot disagree.
KAFKA_VERSION = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text()).group(1)
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


class DistError(RuntimeError):
    """The jars could not be resolved (no Java, no Maven, or Maven failed)."""


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    """The directory holding the broker's jars for ``version``."""
    return settings.cache_dir() / f"kafka-{version}" / "libs"


def require_tool(name: str, purpose: str) -> str:
    """The path of an executable, or a clear error saying what it is needed for."""
    path = shutil.which(name)
    if path is None:
        raise DistError(
            f"`{name}` was not found on PATH; rarecvr needs it {purpose}. Install OpenJDK 17 and "
            "Maven (on Debian: `apt-get install openjdk-17-jre-headless maven`) and try again."
        )
    return path


def fetch(version: str = KAFKA_VERSION, quiet: bool = True) -> Path:
    """Resolve the jars with Maven unless they are cached already; return their directory."""
    libs = libs_dir(version)
    done = libs.parent / ".complete"
    if done.exists():
        return libs
    require_tool("java", "to run the Kafka broker")
    mvn = require_tool("mvn", "to fetch the Kafka broker's jars from Maven Central")
    partial = libs.parent / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise DistError(
            f"Maven could not resolve Kafka {version} from Maven Central (exit "
            f"{result.returncode}). Check network access to Maven Central and ~/.m2/settings.xml. "
            f"Maven said:\n{tail}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    done.write_text(version)
    return libs
