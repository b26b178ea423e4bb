"""`ReviewDesk` on Label Studio, through the official `label-studio-sdk` (2.x)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

from audiary.errors import ReviewDeskError
from audiary.ports import DeskTask, ReviewDesk
from audiary.settings import Settings


class LabelStudioDesk(ReviewDesk):
    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0) -> None:
        from label_studio_sdk import LabelStudio

        self._url = url.rstrip("/")
        # A legacy API token ("Token ..."); the SDK also takes a personal access token.
        self._client = LabelStudio(  # type: ignore[no-untyped-call]
            base_url=self._url, api_key=token, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if not settings.label_studio_url or settings.label_studio_token is None:
            raise ReviewDeskError(
                "Label Studio is not configured: set AUDIARY_LABEL_STUDIO_URL and "
                "AUDIARY_LABEL_STUDIO_TOKEN")
        return cls(settings.label_studio_url, settings.label_studio_token.get_secret_value())

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            return call(*args, **kwargs)
        except ApiError as exc:
            raise ReviewDeskError(f"Label Studio refused to {what}: HTTP {exc.status_code} "
                                  f"{str(exc.body)[:300]}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise ReviewDeskError(f"Label Studio at {self._url} could not {what}: {exc}") from exc

    def ensure_project(self, title: str, label_config: str) -> tuple[int, bool]:
        projects = self._client.projects
        # The `title` filter matches parts of titles: keep the exact one.
        found = [p for p in self._call("list projects", projects.list, title=title)
                 if p.title == title]
        if found:
            project_id = int(found[0].id)
            if (found[0].label_config or "").strip() != label_config.strip():
                self._call("update the labeling config", projects.update,
                           id=project_id, label_config=label_config)
            return project_id, False
        created = self._call("create the project", projects.create, title=title,
                             label_config=label_config,
                             description="Transcripts to correct, from Audiary's review queue.",
                             show_skip_button=True, enable_empty_annotation=False)
        return int(created.id), True

    def ensure_webhook(self, project_id: int, url: str, headers: Mapping[str, str],
                       actions: Sequence[str]) -> bool:
        hooks = self._client.webhooks
        for hook in self._call("list webhooks", hooks.list, project=str(project_id)):
            if hook.url == url:
                self._call("update the webhook", hooks.update, id=hook.id, url=url,
                           headers=dict(headers), actions=list(actions), send_payload=True,
                           send_for_all_actions=False, is_active=True)
                return False
        self._call("create the webhook", hooks.create, url=url, project=project_id,
                   send_payload=True, send_for_all_actions=False, headers=dict(headers),
                   actions=list(actions), is_active=True)
        return True

    def create_task(self, project_id: int, data: Mapping[str, Any],
                    prediction: list[dict[str, Any]], model_version: str) -> int:
        answer = self._call("import a task", self._client.projects.import_tasks,
                            id=project_id, return_task_ids=True, request=[{
                                "data": dict(data),
                                "predictions": [{"model_version": model_version,
                                                 "result": prediction}],
                            }])
        (task_id,) = answer.task_ids
        return int(task_id)

    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> None:
        self._call("update a task", self._client.tasks.update, id=str(task_id), data=dict(data))

    def tasks(self, project_id: int) -> list[DeskTask]:
        pages = self._call("list tasks", self._client.tasks.list, project=project_id,
                           fields="all", page_size=100)
        found = []
        for task in pages:
            annotations = [a if isinstance(a, dict) else a.model_dump(mode="json")
                           for a in (task.annotations or [])]
            found.append(DeskTask(task_id=int(task.id), data=dict(task.data or {}),
                                  annotations=annotations))
        return found

    def project_url(self, project_id: int) -> str:
        return f"{self._url}/projects/{project_id}/data"
