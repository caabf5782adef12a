# antenna-tw collector image. Crashes go to the storage configured by the
# environment (filesystem by default under /app/antenna_crashes; S3 via
# CRASHSTORAGE_CLASS=s3). The spool should be a volume that survives restarts.
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt setup.cfg pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.txt
COPY antenna_tw ./antenna_tw
COPY twisted ./twisted
COPY conf ./conf
RUN pip install --no-cache-dir --no-deps . \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

ENV SPOOL_DIR=/app/antenna_spool \
    CRASHSTORAGE_FS_ROOT=/app/antenna_crashes \
    AWS_EC2_METADATA_DISABLED=false
VOLUME ["/app/antenna_spool"]
EXPOSE 8000
STOPSIGNAL SIGTERM
CMD ["twistd", "-n", "--pidfile=", "antenna", "--port", "tcp:8000:interface=0.0.0.0"]
