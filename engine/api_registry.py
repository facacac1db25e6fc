"""The registry part of the Engine facade: ``pull``, ``push``, ``login``, ``logout``.

Mixed into ``engine.api.Engine``; expects ``self.config``, ``self.images``
and ``self.emit``. Long operations take ``progress``: a callable given
Docker-shaped JSON messages (engine/registry/progress.py) from worker
threads, one call at a time, so the dashboard can forward them as they come.
Results are plain dicts. Pulls and pushes append ``image`` events (``pull``,
``push``) like Docker's.

Credentials come from the auth file (``<root>/auth.json`` unless
``BERTH_AUTH_FILE`` or ``auth_file`` says otherwise) that ``login`` writes;
``credentials={"username": ..., "password": ...}`` overrides them for one call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.images.store import ImageStore
    from engine.registry.context import RegistryContext
    from engine.registry.credentials import Credentials

ProgressCallback = Callable[[dict], object]


def _credentials(value: dict | None) -> Credentials | None:
    from engine.registry.credentials import Credentials

    if value is None:
        return None
    user, password = value.get("username"), value.get("password")
    if not user or password is None:
        raise InvalidArgument("credentials need a username and a password")
    return Credentials(str(user), str(password))


class RegistryAPI:
    if TYPE_CHECKING:  # provided by Engine
        config: EngineConfig
        images: ImageStore

        def emit(self, type_: str, action: str, obj_id: str, **attrs: object) -> int: ...

    def registry_context(self, auth_file: str | Path | None = None) -> RegistryContext:
        from engine.registry.context import RegistryContext

        return RegistryContext(
            self.config.root, self.config.locks_dir, Path(auth_file) if auth_file else None
        )

    # pull -----------------------------------------------------------------------------------
    def pull_image(
        self,
        ref: str,
        *,
        progress: ProgressCallback | None = None,
        platform: str | None = None,
        all_tags: bool = False,
        credentials: dict | None = None,
        auth_file: str | Path | None = None,
        concurrency: int | None = None,
    ) -> dict:
        """``docker pull``. Returns the pull's report: ``Reference`` (familiar
        name), ``Id``, ``Digest`` (what the reference resolved to), ``Status``
        (Docker's "Downloaded newer image for ..." / "Image is up to date for
        ..."), ``Platform`` and per-layer ``Layers``. With ``all_tags`` every
        tag of the repository is pulled: ``{"Reference": repo, "Tags": [reports]}``."""
        from engine.images import reference as refs
        from engine.registry import manifests as mf
        from engine.registry.progress import Progress
        from engine.registry.pull import Puller

        parsed = refs.parse_reference(ref, default_tag=not all_tags)
        if all_tags and parsed.tagged_or_digested():
            raise InvalidArgument(f"tag can't be used with --all-tags/-a: {ref}", obj=ref)
        want = mf.Platform.parse(platform) if platform else None
        ctx = self.registry_context(auth_file)
        sink = Progress(progress)
        with ctx.client(parsed.domain, _credentials(credentials)) as client:
            puller = Puller(
                self.images,
                client,
                progress=sink,
                platform=want,
                blobinfo=ctx.blobinfo,
                concurrency=concurrency,
            )
            if not all_tags:
                result = puller.pull(parsed).to_dict()
                self.emit("image", "pull", result["Id"], name=result["Reference"])
                return result
            tags = client.list_tags(parsed.path, what=parsed.familiar_name)
            if not tags:
                raise NotFound(f"repository {parsed.familiar_name} has no tags", obj=ref)
            out = []
            for tag in sorted(tags):
                result = puller.pull(parsed.with_tag(tag)).to_dict()
                self.emit("image", "pull", result["Id"], name=result["Reference"])
                out.append(result)
            return {"Reference": parsed.familiar_name, "Tags": out}

    # push -----------------------------------------------------------------------------------
    def push_image(
        self,
        ref: str,
        *,
        progress: ProgressCallback | None = None,
        all_tags: bool = False,
        compression: str = "gzip",
        credentials: dict | None = None,
        auth_file: str | Path | None = None,
    ) -> dict:
        """``docker push``. Returns ``Reference``, ``Tag``, ``Digest`` (the
        manifest's digest in the registry), ``Size`` and per-layer ``Layers``
        (``Pushed`` / ``Layer already exists`` / ``Mounted from ...``). With
        ``all_tags`` every local tag of the repository: ``{"Reference", "Tags": [...]}``."""
        from engine.images import reference as refs
        from engine.registry.progress import Progress
        from engine.registry.push import Pusher

        parsed = refs.parse_reference(ref, default_tag=not all_tags)
        if all_tags and parsed.tagged_or_digested():
            raise InvalidArgument(f"tag can't be used with --all-tags/-a: {ref}", obj=ref)
        if parsed.digest:
            raise InvalidArgument(f"cannot push a digest reference ({ref}): push a tag", obj=ref)
        if all_tags:
            targets = sorted(
                {
                    t
                    for rec in self.images.list(all=True)
                    for t in map(refs.parse_reference, rec.repo_tags)
                    if t.name == parsed.name
                },
                key=str,
            )
            if not targets:
                raise NotFound(f"An image does not exist locally with the tag: {ref}", obj=ref)
        else:
            targets = [parsed]
        ctx = self.registry_context(auth_file)
        sink = Progress(progress)
        out = []
        with ctx.client(parsed.domain, _credentials(credentials)) as client:
            pusher = Pusher(
                self.images, client, progress=sink, blobinfo=ctx.blobinfo, compression=compression
            )
            for target in targets:
                try:
                    rec = self.images.get(str(target))
                except NotFound:
                    # Docker's words, and like Docker the name without its tag.
                    raise NotFound(
                        f"An image does not exist locally with the tag: {target.familiar_name}",
                        obj=target.familiar(),
                    ) from None
                result = pusher.push(rec, target).to_dict()
                self.emit(
                    "image", "push", rec.id, name=result["Reference"], digest=result["Digest"]
                )
                out.append(result)
        return out[0] if not all_tags else {"Reference": parsed.familiar_name, "Tags": out}

    # login / logout -------------------------------------------------------------------------
    def login(
        self,
        server: str | None = None,
        username: str = "",
        password: str = "",
        *,
        auth_file: str | Path | None = None,
    ) -> dict:
        """Check the credentials against the registry, then store them (mode 0600).
        Returns ``{"Status": "Login Succeeded", "ServerAddress": key}``."""
        from engine.registry.credentials import Credentials, server_key

        if not username:
            raise InvalidArgument("login needs a username")
        if not password:
            raise InvalidArgument("login needs a password")
        domain = _domain_of(server)
        ctx = self.registry_context(auth_file)
        creds = Credentials(username, password)
        with ctx.client(domain, creds) as client:
            client.ping()
        key = ctx.credentials.store(server_key(server or domain), creds)
        return {
            "Status": "Login Succeeded",
            "ServerAddress": key,
            "AuthFile": str(ctx.credentials.path),
        }

    def logout(self, server: str | None = None, *, auth_file: str | Path | None = None) -> dict:
        """Forget the stored credentials for ``server`` (Docker Hub by default).
        ``Removed`` says whether there were any."""
        from engine.registry.credentials import server_key

        ctx = self.registry_context(auth_file)
        key = server_key(server or "docker.io")
        removed = ctx.credentials.remove(key)
        return {"Removed": removed, "ServerAddress": key}

    def registry_logins(self, *, auth_file: str | Path | None = None) -> list[str]:
        """The servers with stored credentials (never the credentials)."""
        return self.registry_context(auth_file).credentials.servers()


def _domain_of(server: str | None) -> str:
    """``host[:port]`` from a login server argument (a URL or a host), Docker Hub by default."""
    from engine.registry.credentials import DOCKER_HUB_KEY, server_key

    key = server_key(server or "docker.io")
    return "docker.io" if key == DOCKER_HUB_KEY else key
