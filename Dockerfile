# Image for docker-compose.yml: the same set-up as scripts/setup.sh.
FROM debian:12
COPY . /opt/berth
WORKDIR /opt/berth
RUN ./scripts/setup.sh && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/berth/.venv/bin:$PATH
