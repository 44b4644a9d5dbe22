"""Recipes: named job specs that Keiko has measured, to train by name (`POST /jobs` with
`{"recipe": NAME, "dataset_id": ...}`)."""

from __future__ import annotations

from fastapi import APIRouter

from models.specs import RECIPES, Recipe
from service.auth import CallerDep
from service.errors import NotFound, responses
from service.schemas import Page, RecipeRead

router = APIRouter(prefix="/recipes", tags=["recipes"], responses=responses(401, 403))


def _read(recipe: Recipe) -> RecipeRead:
    return RecipeRead(
        name=recipe.name, title=recipe.title, description=recipe.description,
        spec=recipe.spec, needs=recipe.needs, reached=recipe.reached,
    )  # fmt: skip


@router.get("", response_model=Page[RecipeRead], summary="List recipes")
def list_recipes(_caller: CallerDep) -> Page[RecipeRead]:
    """Every recipe (they are few: one page), with its spec and what it reached."""
    items = [_read(recipe) for recipe in RECIPES.values()]
    return Page[RecipeRead](items=items, total=len(items), limit=len(items), offset=0)


@router.get("/{name}", response_model=RecipeRead, summary="Get a recipe", responses=responses(404))
def get_recipe(name: str, _caller: CallerDep) -> RecipeRead:
    """One recipe: its spec, what the job must add, and what it reached."""
    recipe = RECIPES.get(name)
    if recipe is None:
        raise NotFound(f"no recipe named {name!r}; the recipes are {', '.join(RECIPES)}")
    return _read(recipe)
