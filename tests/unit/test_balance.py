"""The board of open connections per worker (antenna_tw.workers.balance.LoadBoard)."""

from twisted.logger import capturedLogs, formatEvent

from antenna_tw.workers.balance import BalancingEndpoint, LoadBoard, balanced


def test_each_worker_sees_what_the_others_publish(tmp_path):
    path = tmp_path / "board"
    boards = [LoadBoard(path, 3, index).open() for index in range(3)]
    boards[0].publish(7)
    boards[1].publish(4)
    boards[2].publish(9)
    assert [boards[0].count(index) for index in range(3)] == [7, 4, 9]
    assert boards[0].lightest_sibling() == (1, 4)
    assert boards[1].lightest_sibling() == (0, 7)
    assert boards[2].lightest_sibling() == (1, 4)


def test_a_worker_starts_at_zero_and_a_stopped_one_is_never_the_lightest(tmp_path):
    path = tmp_path / "board"
    first = LoadBoard(path, 2, 0).open()
    second = LoadBoard(path, 2, 1).open()
    second.publish(12)
    second.close()  # a worker that stops; its replacement starts from 0
    assert first.lightest_sibling()[1] > 10**9
    replacement = LoadBoard(path, 2, 1).open()
    assert first.lightest_sibling() == (1, 0)
    replacement.publish(3)
    assert first.lightest_sibling() == (1, 3)


def test_a_board_grows_a_smaller_file_from_fewer_workers(tmp_path):
    path = tmp_path / "board"
    LoadBoard(path, 1, 0).open().publish(5)
    board = LoadBoard(path, 2, 1).open()
    assert path.stat().st_size == 8
    assert board.lightest_sibling() == (0, 5)


def test_a_single_worker_has_no_sibling(tmp_path):
    assert LoadBoard(tmp_path / "board", 1, 0).open().lightest_sibling() == (None, None)


def test_a_board_that_cannot_be_made_leaves_the_endpoint_unbalanced(tmp_path):
    (tmp_path / ".connections").mkdir()  # where the board's file should be
    endpoint = object()
    with capturedLogs() as events:
        assert balanced(endpoint, None, tmp_path / ".connections", 2, 0, "test") is endpoint
    assert any("not balanced" in formatEvent(event) for event in events)
    assert isinstance(balanced(endpoint, None, tmp_path / "board", 2, 0, "test"),
                      BalancingEndpoint)
