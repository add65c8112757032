# The agent (and, with another command, the echo peers or a notebook) in one image.
#   docker build -t engee-sockets .
#   docker run -e ENGEE_AGENT_TOKEN=... -p 127.0.0.1:8700:8700 engee-sockets
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --create-home --uid 1000 engee
USER engee

EXPOSE 8700
# The token comes from $ENGEE_AGENT_TOKEN; without it the agent generates one and prints it.
CMD ["engee-agent", "--host", "0.0.0.0", "--port", "8700"]
