"""GroupLens MovieLens raw files: ML-100K (u.data, u.item) and ML-1M (ratings.dat, movies.dat).

Formats, as the READMEs shipped in ml-100k.zip and ml-1m.zip describe them:
- `u.data`: `user id | item id | rating | timestamp`, tab-separated, Unix seconds (UTC).
- `u.item`: `movie id | movie title | release date | video release date | IMDb URL` then 19 genre
  flags (0/1), separated by '|'. The release date reads like `01-Jan-1995`.
- `ratings.dat`: `UserID::MovieID::Rating::Timestamp`.
- `movies.dat`: `MovieID::Title::Genres`, the title ending in the year, e.g. `Toy Story (1995)`,
  and the genres separated by '|'.
The files are Latin-1 (a few titles contain accented letters), so they are decoded as Latin-1,
which maps every byte and cannot fail.

Attributes are the genre multi-hot columns followed by the release year, min-max scaled into
[0, 1]. Ratings are ignored: every rating counts as one interaction.

NOTE: the tests load small files written to the READMEs' format. The real u.item and the ML-1M
files have not been loaded in them, because only RecBole's atomic copy of ML-100K is at hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from convrec.data.atomic import (
    check_field_counts,
    check_not_empty,
    check_unique_ids,
    first_true,
    missing_year_filter,
    multi_hot,
    parse_timestamps,
    read_text,
    scale_years,
    split_fields,
    split_lines,
)
from convrec.data.schema import RawDataset
from convrec.errors import DataError

logger = logging.getLogger(__name__)

ENCODING = "latin-1"
# Genre flag order of u.item (ML-100K README, and u.genre).
ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
# Genres of movies.dat (ML-1M README); ML-1M has no "unknown" genre.
ML_1M_GENRES = ML_100K_GENRES[1:]
U_ITEM_WIDTH = 5 + len(ML_100K_GENRES)
YEAR_NAME = "release_year"
RATINGS_NOTE = "ratings are ignored: every rating counts as one interaction"


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError("file not found", path=path)
    return split_lines(read_text(path, ENCODING))


def _interactions(table: np.ndarray, path: Path) -> pd.DataFrame:
    """Build the interactions frame from (user, item, rating, timestamp) rows, line 1 first."""
    check_not_empty(table[:, 0], field="user id", path=path, first_line=1)
    check_not_empty(table[:, 1], field="item id", path=path, first_line=1)
    return pd.DataFrame(
        {
            "user": pd.array(table[:, 0], dtype="str"),
            "item": pd.array(table[:, 1], dtype="str"),
            "timestamp": parse_timestamps(table[:, 3], path=path, first_line=1),
            "line": np.arange(1, len(table) + 1, dtype=np.int64),
        }
    )


def _attribute_frame(item_ids: np.ndarray, genres: pd.DataFrame, years: np.ndarray) -> pd.DataFrame:
    attributes = genres.reset_index(drop=True)
    attributes[YEAR_NAME] = scale_years(years)
    attributes.index = pd.Index(item_ids.astype(str), name="item")
    return attributes


# ---------------------------------------------------------------------------------------------
# MovieLens-100K
# ---------------------------------------------------------------------------------------------


def read_u_data(path: Path) -> pd.DataFrame:
    """Read `u.data` into the RawDataset interactions frame."""
    lines = _read_lines(path)
    ml_1m_style = first_true(pd.Series(lines, dtype=object).str.contains("::", regex=False))
    if ml_1m_style >= 0:
        raise DataError(
            f"found '::' separators in {lines[ml_1m_style]!r}; u.data is tab-separated "
            "('::' is the ML-1M ratings.dat format, so load that directory as ML-1M)",
            path=path,
            line=ml_1m_style + 1,
        )
    check_field_counts(
        lines, "\t", 4, path=path, first_line=1,
        hint="u.data is tab-separated: user id, item id, rating, timestamp",
    )
    return _interactions(split_fields(lines, "\t", 4), path)


def read_u_item(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read `u.item` into an attribute frame and the raw release years (NaN where missing)."""
    lines = _read_lines(path)
    check_field_counts(
        lines, "|", U_ITEM_WIDTH, path=path, first_line=1,
        hint=f"u.item has {U_ITEM_WIDTH} '|'-separated fields: id, title, release date, "
        "video release date, IMDb URL and 19 genre flags",
    )
    table = split_fields(lines, "|", U_ITEM_WIDTH)
    item_ids = table[:, 0]
    check_not_empty(item_ids, field="movie id", path=path, first_line=1)
    check_unique_ids(item_ids, field="movie id", path=path, first_line=1)

    flags = table[:, 5:]
    invalid = ~np.isin(flags, ("0", "1"))
    if invalid.any():
        row, column = np.argwhere(invalid)[0]
        raise DataError(
            f"genre flag {ML_100K_GENRES[column]!r} is {flags[row, column]!r}; "
            "flags must be 0 or 1",
            path=path,
            line=int(row) + 1,
        )
    genres = pd.DataFrame(
        (flags == "1").astype(np.float64),
        columns=[f"genre={genre}" for genre in ML_100K_GENRES],
    )

    # Release dates read like 01-Jan-1995; item 267 of ML-100K has none.
    release = pd.Series(table[:, 2], dtype=object).astype("str")
    years = pd.to_numeric(release.str.extract(r"(\d{4})\s*$")[0], errors="coerce")
    years = years.to_numpy(dtype=np.float64)
    return _attribute_frame(item_ids, genres, years), years


def load_ml100k(directory: Path) -> RawDataset:
    """Load MovieLens-100K from a directory with `u.data` and, optionally, `u.item`.

    Attributes are the 19 genre flags of u.item followed by the scaled release year (F = 20).
    """
    directory = Path(directory)
    return _load_grouplens("ml-100k", directory / "u.data", read_u_data,
                           directory / "u.item", read_u_item)


# ---------------------------------------------------------------------------------------------
# MovieLens-1M
# ---------------------------------------------------------------------------------------------


def read_ratings_dat(path: Path) -> pd.DataFrame:
    """Read `ratings.dat` into the RawDataset interactions frame."""
    lines = _read_lines(path)
    check_field_counts(
        lines, "::", 4, path=path, first_line=1,
        hint="ratings.dat is '::'-separated: UserID::MovieID::Rating::Timestamp (a "
        "tab-separated file is the ML-100K u.data format)",
    )
    return _interactions(split_fields(lines, "::", 4), path)


def read_movies_dat(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read `movies.dat` into an attribute frame and the release years parsed from the titles."""
    lines = _read_lines(path)
    check_field_counts(
        lines, "::", 3, path=path, first_line=1,
        hint="movies.dat is '::'-separated: MovieID::Title::Genres",
    )
    table = split_fields(lines, "::", 3)
    item_ids = table[:, 0]
    check_not_empty(item_ids, field="MovieID", path=path, first_line=1)
    check_unique_ids(item_ids, field="MovieID", path=path, first_line=1)

    genres = multi_hot(table[:, 2], "|", prefix="genre", known_order=ML_1M_GENRES)
    titles = pd.Series(table[:, 1], dtype=object).astype("str")
    years = pd.to_numeric(titles.str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")
    years = years.to_numpy(dtype=np.float64)
    return _attribute_frame(item_ids, genres, years), years


def load_ml1m(directory: Path) -> RawDataset:
    """Load MovieLens-1M from a directory with `ratings.dat` and, optionally, `movies.dat`.

    Attributes are the 18 genres of movies.dat (plus any genre not in the README's list, after
    them) followed by the release year from the title, scaled (F = 19).
    """
    directory = Path(directory)
    return _load_grouplens("ml-1m", directory / "ratings.dat", read_ratings_dat,
                           directory / "movies.dat", read_movies_dat)


def _load_grouplens(name: str, ratings_path: Path, read_ratings, movies_path: Path,
                    read_movies) -> RawDataset:
    """Read a GroupLens ratings file and, when present, its movie file as attributes."""
    interactions = read_ratings(ratings_path)
    notes = [RATINGS_NOTE]
    filters = []
    attributes = None
    if movies_path.is_file():
        attributes, years = read_movies(movies_path)
        filters.append(missing_year_filter(attributes.index.to_numpy(), years, YEAR_NAME))
    else:
        notes.append(f"{movies_path.name} not found: the dataset has no item attributes")
    logger.info("read %d %s interactions from %s", len(interactions), name, ratings_path)
    return RawDataset(
        name=name,
        source=str(ratings_path),
        interactions=interactions,
        item_attributes=attributes,
        notes=notes,
        filters=filters,
    )
