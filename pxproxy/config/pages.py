"""`proxy.pages` (theme and template of the loading and error pages) and a route's `page:`.

The template file is read and checked when the config is loaded (at start and on every
reload), so a missing, unreadable or invalid one is a config error at `proxy.pages.template`,
and a reload picks up an edited template even when the config file did not change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PrivateAttr,
    field_validator,
    model_validator,
)

from ..pages.document import MAX_TEMPLATE_BYTES, PageLook, Pages, parse_template
from ..pages.templating import Template, TemplateError
from ..pages.themes import ThemeName
from ..pages.values import check_accent, check_logo, check_title


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _optional(check: Callable[[str], str]) -> Callable[[str | None], str | None]:
    return lambda value: None if value is None else check(value)


class RoutePage(_Strict):
    """A route's look on its pages: all optional, the theme's defaults otherwise."""

    title: Annotated[str | None, AfterValidator(_optional(check_title))] = None
    logo: Annotated[str | None, AfterValidator(_optional(check_logo))] = None
    accent: Annotated[str | None, AfterValidator(_optional(check_accent))] = None

    def look(self, guest: str) -> PageLook:
        return PageLook(name=self.title or guest, guest=guest, logo=self.logo, accent=self.accent)


class PagesConfig(_Strict):
    theme: ThemeName = "default"
    # An HTML file with $placeholders (README, pages/document.py); None: the built-in page.
    template: str | None = None
    _compiled: Template | None = PrivateAttr(default=None)

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        # Here for the error's key path (proxy.pages.template); kept by the model check below.
        if value is not None:
            read_template(value)
        return value

    @model_validator(mode="after")
    def _read_template(self) -> PagesConfig:
        if self.template is not None:
            self._compiled = read_template(self.template)
        return self

    def pages(self) -> Pages:
        if self._compiled is None:
            return Pages(theme=self.theme)
        return Pages(theme=self.theme, template=self._compiled)


def read_template(path: str) -> Template:
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the template {path}: {exc.strerror}") from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"the template {path} is larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        return parse_template(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"the template {path} is not UTF-8 text") from None
    except TemplateError as exc:
        raise ValueError(f"the template {path}: {exc}") from None
