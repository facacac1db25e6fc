"""Talking to image registries with the OCI distribution API (pull, push, login).

Modules by concern:

    errors.py       RegistryError -> Unauthorized, Unreachable (EngineError subclasses)
    hosts.py        which registries may be spoken to over plain HTTP, TLS settings, Docker Hub's endpoint
    credentials.py  the auth file (Docker's config.json shape, mode 0600) behind login/logout
    auth.py         WWW-Authenticate challenges; anonymous, basic and bearer-token auth
    transport.py    HTTP over http.client: a small connection pool per host, bounded reads,
                    URLs redacted for messages
    client.py       RegistryClient: auth retries; credentials only to the registry's own host,
                    plain HTTP only to hosts marked insecure (redirects, Locations, token realms)
    replies.py      refusals and error replies as one-line engine errors
    manifests.py    media types, manifest parsing, platform selection in indexes / manifest lists
    progress.py     Docker-shaped progress messages (the CLI renders them, the dashboard forwards them)
    blobinfo.py     what is known about blobs elsewhere: compressed digests of local layers, which
                    repositories hold a blob (push skips and mounts with it)
    pull.py         manifest -> config -> layers fetched in parallel, verified while streaming
    unpack.py       one pass per layer: hash, inflate, unpack (installed by LayerStore.install)
    staging.py      unnamed (O_TMPFILE) staging files for pulled blobs: a killed pull leaves none
    parallel.py     a few worker threads; the first failure cancels the rest
    push.py         blobs (HEAD check, cross-repository mount, upload) then the manifest

Nothing here is imported at CLI start: the facade and the CLI import inside their functions.
"""
