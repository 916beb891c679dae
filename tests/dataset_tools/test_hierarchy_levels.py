"""Level computation on a hand-made tree (no bpy)."""

from dataset_tools.hierarchy import Hierarchy, compute_levels, number_tree


def obj(name, rendered=True, children=()):
    return {"name": name, "kind": "object", "rendered": rendered, "children": list(children)}


def coll(name, children):
    return {"name": name, "kind": "collection", "children": list(children)}


TREE = {"name": "Scene", "kind": "scene", "children": [
    coll("A", [coll("A1", [obj("a"), obj("b", children=[obj("b_child")])])]),
    obj("loose"),
    coll("Chairs", [obj("Chair0", rendered=False, children=[obj("seat"), obj("leg")])]),
]}


def test_number_tree_preorder_from_one():
    nodes = number_tree(TREE)
    assert [n["name"] for n in nodes] == ["Scene", "A", "A1", "a", "b", "b_child", "loose", "Chairs", "Chair0",
                                          "seat", "leg"]
    assert [n["id"] for n in nodes] == list(range(1, 12))
    assert nodes[4]["children"] == [6] and nodes[5]["parent"] == 5


def test_levels_nest():
    nodes = number_tree(TREE)
    lv = compute_levels(nodes)
    ids = {n["name"]: n["id"] for n in nodes}
    assert lv["object"][ids["b_child"]] == ids["b"]
    assert lv["object"][ids["seat"]] == ids["Chair0"]
    assert lv["collection"][ids["b_child"]] == ids["A"]
    assert lv["collection"][ids["loose"]] == ids["loose"]  # directly in the scene: its own group
    assert set(lv["scene"].values()) == {1}
    assert ids["Chair0"] not in lv["object"]  # not rendered: no pixels
    h = Hierarchy(nodes=nodes, levels=lv)
    assert Hierarchy.from_json(h.to_json()).levels == lv
    lut = h.level_lut("collection")
    assert lut[0] == 0 and lut[ids["leg"]] == ids["Chairs"]
