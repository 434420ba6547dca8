"""`bootstrap --demo` registers this product's own checkout as the local repository
`control-plane`, so a newcomer's first code scan is of real code; run again, or
where the project is not a git checkout, it adds nothing."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as project_settings
from django.core.management import call_command

from healthmon.demo import DEMO_REPOSITORY, register_own_checkout
from healthmon.models import Repository
from tests.healthmon.code_repos import CLEAN, make_repository

pytestmark = pytest.mark.django_db


def test_bootstrap_demo_registers_the_checkout_it_runs_from_once(
    settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    settings.BASE_DIR = make_repository(tmp_path / "control-plane", {"app.py": CLEAN})

    for _ in range(2):
        out = StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("bootstrap", "--demo", stdout=out)

    repository = Repository.objects.get()
    assert (repository.name, repository.kind, repository.path, repository.enabled) == (
        DEMO_REPOSITORY,
        Repository.Kind.LOCAL,
        str(settings.BASE_DIR),
        True,
    )
    assert "Demo repository control-plane is registered already." in out.getvalue()


def test_a_project_that_is_not_a_git_checkout_registers_nothing(
    settings: Any, tmp_path: Path
) -> None:
    settings.BASE_DIR = tmp_path

    said = register_own_checkout()

    assert said == f"Demo repository: not registered ({tmp_path} is not a git checkout)."
    assert not Repository.objects.exists()


def test_a_repository_already_named_so_or_at_that_path_is_left_as_it_is(
    settings: Any, tmp_path: Path
) -> None:
    settings.BASE_DIR = make_repository(tmp_path / "checkout", {"app.py": CLEAN})
    Repository.objects.create(name="mine", path=str(settings.BASE_DIR), enabled=False)

    assert register_own_checkout() == "Demo repository mine is registered already."
    Repository.objects.all().delete()
    Repository.objects.create(name=DEMO_REPOSITORY, path="/elsewhere")

    assert register_own_checkout() == "Demo repository control-plane is registered already."
    assert list(Repository.objects.values_list("name", "path", "enabled")) == [
        (DEMO_REPOSITORY, "/elsewhere", True)
    ]


def test_the_project_base_dir_is_where_manage_py_lives() -> None:
    # What the demo registers is the product's own checkout, not a directory inside it.
    assert (Path(project_settings.BASE_DIR) / "manage.py").is_file()
