from pullkv import Client


def test_put_get_round_trip(client: Client, namespace_id: str) -> None:
    ns = client.namespace(namespace_id)
    ns.put("a/b c", "hello", metadata={"x": 1})
    assert ns.get("a/b c") == "hello"
    got = ns.get_with_metadata("a/b c")
    assert got.value == "hello" and got.metadata == {"x": 1}
