# Image for docker-compose.yml: the same set-up as scripts/setup.sh (Debian packages,
# the virtual environment, the Python and npm packages).
FROM debian:12
COPY . /opt/berth
WORKDIR /opt/berth
RUN ./scripts/setup.sh && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/berth/.venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=dashboard.settings
