"""API-sourced ETL, ported from Prefect's ``examples/run_api_sourced_etl.py``.

Extract pages of articles from the Dev.to API (each page a task, retried with
backoff), transform them into a pandas DataFrame, load it to a CSV. The DataFrame
travels between tasks as Parquet through the artifact store.

    conveyor run devto_etl:etl -p pages=3 -p output_file=devto_articles.csv

What changed from the Prefect version: ``@flow`` is ``@workflow``; the loop over
``range(1, pages + 1)`` is ``fetch_page.map(span(1, pages + 1), ...)`` (``pages`` is
known only when the run starts, so the fan-out is the engine's); ``to_dataframe``
says how its DataFrame travels (``result_serializer="parquet"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from conveyor import span, task, workflow

COLUMNS = [
    "id",
    "title",
    "published_at",
    "url",
    "comments_count",
    "positive_reactions_count",
    "tag_list",
    "user.username",
]


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def fetch_page(page: int, api_base: str, per_page: int) -> list[dict[str, Any]]:
    """Return a list of article dicts for a given page number."""
    print(f"Fetching page {page} …")
    response = httpx.get(
        f"{api_base}/articles", params={"page": page, "per_page": per_page}, timeout=30
    )
    response.raise_for_status()
    articles: list[dict[str, Any]] = response.json()
    return articles


@task(result_serializer="parquet")
def to_dataframe(raw_articles: list[list[dict[str, Any]]]) -> pd.DataFrame:
    """Flatten and normalise the pages into a tidy DataFrame."""
    records = [article for page in raw_articles for article in page]
    return pd.json_normalize(records)[COLUMNS]


@task
def save_csv(df: pd.DataFrame, path: Path) -> int:
    """Persist the DataFrame, print a preview, and say how many rows were written."""
    df.to_csv(path, index=False)
    print(f"Saved {len(df)} rows ➜ {path}\n\nPreview:\n{df.head()}\n")
    return len(df)


@workflow(name="devto-etl")
def etl(
    api_base: str = "https://dev.to/api",
    pages: int = 3,
    per_page: int = 30,
    output_file: Path = Path("devto_articles.csv"),
) -> None:
    """Fetch pages of Dev.to articles, tidy them with pandas, save them as CSV."""
    raw_pages = fetch_page.map(span(1, pages + 1), api_base=api_base, per_page=per_page)
    df = to_dataframe(raw_pages)
    save_csv(df, output_file)
