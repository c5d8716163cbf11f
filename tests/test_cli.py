"""The command line: exit codes, messages without tracebacks, and what reaches the library."""

from pathlib import Path

from typer.testing import CliRunner

from bench.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def write_inter(directory: Path, rows: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "logs.inter"
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    path.write_text(header + "".join(row + "\n" for row in rows))
    return path


def test_unknown_model_lists_valid_ones(tmp_path):
    result = invoke("accuracy", "--models", "gru4rec", "--output", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "unknown model 'gru4rec'; valid models are: convrec, sasrec, carca" in result.output
    assert "Traceback" not in result.output


def test_data_info_ml100k():
    result = invoke("data", "info", "ml-100k")
    assert result.exit_code == 0, result.output
    assert "943 users, 1,682 items, 100,000 interactions" in result.output
    assert "context (X=6)" in result.output


def test_colon_separated_u_data_rejected(tmp_path):
    (tmp_path / "u.data").write_text("1::10::5::881250949\n")
    result = invoke("data", "info", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'u.data'}, line 1" in result.output
    assert "1::10::5::881250949" in result.output
    assert "Traceback" not in result.output


def test_repeated_header_rejected(tmp_path):
    path = write_inter(tmp_path, ["1\t10\t100", "user_id:token\titem_id:token\ttimestamp:float",
                                  "1\t11\t200"])
    result = invoke("data", "info", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}, line 3" in result.output
    assert "Traceback" not in result.output


def test_latin1_bytes_rejected(tmp_path):
    path = tmp_path / "films.inter"
    path.write_bytes("user_id:token\titem_id:token\ttimestamp:float\n1\tMis\xe9rables\t100\n"
                     .encode("latin-1"))
    result = invoke("data", "info", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}, line 2" in result.output
    assert "UTF-8" in result.output


def test_no_user_with_two_training_items(tmp_path):
    # Three interactions per user: one for training, one for validation, one for test.
    rows = [f"{user}\t{user * 3 + offset}\t{100 + offset}" for user in range(1, 130)
            for offset in range(3)]
    path = write_inter(tmp_path / "data", rows)
    result = invoke("accuracy", "--models", "convrec", "--datasets", str(path), "--seeds", "1",
                    "--max-epochs", "1", "--output", str(tmp_path / "out"), "--work-dir",
                    str(tmp_path / "runs"), "--no-progress")
    assert result.exit_code != 0, result.output
    assert "no user has at least 2 training interactions" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "logs.csv").exists()


def test_invalid_setting_value_rejected(tmp_path):
    result = invoke("accuracy", "--models", "convrec:max_len=abc", "--output", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert ("invalid value 'abc' for setting 'max_len' of model 'convrec': expected an integer"
            in result.output)
    assert "Traceback" not in result.output


def test_invalid_device_rejected(tmp_path):
    result = invoke("accuracy", "--models", "convrec", "--device", "tpu", "--output",
                    str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "invalid device 'tpu'; use auto, cpu, cuda or cuda:N" in result.output
