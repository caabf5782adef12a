# antenna-tw collector image (docs/deploy.rst). Crashes go to the storage the
# environment configures (the filesystem volume by default; S3 with
# CRASHSTORAGE_CLASS=s3); the spool volume must survive restarts.
#
# The base is pinned by tag (the Python the tests run on, Debian 12) and by
# digest, so a rebuild gets the same bytes; bump both together.
FROM python:3.11.7-slim-bookworm@sha256:8f64a67710f3d981cf3008d6f9f1dbe61accd7927f165f4e37ea3f8b883ccc3f

# The slim base already has ca-certificates (S3 over TLS): no apt-get here.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt setup.cfg pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.txt
COPY antenna_tw ./antenna_tw
COPY twisted ./twisted
COPY conf ./conf
# Building the plugin cache now, as root, spares the unprivileged user a
# write into site-packages at start.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# The code stays root's; the collector writes only to its two volumes.
RUN groupadd --system --gid 10001 antenna \
    && useradd --system --uid 10001 --gid antenna --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin antenna \
    && mkdir -p /var/lib/antenna/spool /var/lib/antenna/crashes \
    && chown antenna:antenna /var/lib/antenna/spool /var/lib/antenna/crashes

ENV SPOOL_DIR=/var/lib/antenna/spool \
    CRASHSTORAGE_FS_ROOT=/var/lib/antenna/crashes \
    AWS_EC2_METADATA_DISABLED=false
VOLUME ["/var/lib/antenna/spool", "/var/lib/antenna/crashes"]
# Numeric, so Kubernetes runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8000

# /__lbheartbeat__ answers 200 while the process serves (it never waits on
# storage); python is the one HTTP client the image has.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/__lbheartbeat__', timeout=2)"]

# SIGTERM: the port closes, the spool drains for SHUTDOWN_TIMEOUT (30 s by
# default); give `docker stop` a --time above SHUTDOWN_TIMEOUT + 15.
# --workers defaults to the CPUs the container may use (--cpus, --cpuset-cpus).
STOPSIGNAL SIGTERM
CMD ["twistd", "-n", "--pidfile=", "antenna", "--port", "tcp:8000:interface=0.0.0.0"]
