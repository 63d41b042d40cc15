# One image for every simjobs service; docker-compose.yml picks the command
# (python -m services.api | services.projector | services.runner | services.slurm_bridge).
# Build: docker build -t simjobs:0.1.0 .   (the tag is pyproject.toml's version)
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, exactly the pinned list of pyproject.toml, theirs pinned by
# constraints.txt, in a layer of their own (rebuilt only when those lists change). Every one
# of them comes as a cp311 manylinux wheel, so the slim image needs no compiler.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-compile -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code runs from /app, not from site-packages: the event schemas and the OpenAPI
# document are read relative to the packages (schemas/ next to services/).
COPY services ./services
COPY schemas ./schemas

# A non-root user owns the state: the artifact store and the state directory are volume
# mount points, and an empty named volume takes this ownership when first mounted.
RUN groupadd --system --gid 10001 simjobs \
    && useradd --system --uid 10001 --gid simjobs --home-dir /var/lib/simjobs \
        --shell /usr/sbin/nologin simjobs \
    && mkdir -p /var/lib/simjobs/artifacts /var/lib/simjobs/state \
    && chown -R simjobs:simjobs /var/lib/simjobs
USER simjobs:simjobs

EXPOSE 5000
CMD ["python", "-m", "services.api"]
