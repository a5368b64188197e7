//! Tests of `pickle`.
use super::*;

fn dict_items(v: &Value) -> Vec<(Value, Value)> {
    match v {
        Value::Dict(d) => d.borrow().clone(),
        other => panic!("not a dict: {}", other.kind()),
    }
}

#[test]
fn protocol2_dict_with_memo_and_numbers() {
    // pickle.dumps({'a': [1, -2, 3.5, None, True], 'b': 'a'}, protocol=2), hand-assembled.
    let mut p = vec![
        0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'q', 1, b']', b'q', 2,
    ];
    p.extend([b'(', b'K', 1, b'J', 0xfe, 0xff, 0xff, 0xff, b'G']);
    p.extend(3.5f64.to_be_bytes());
    p.extend([
        b'N', 0x88, b'e', b'X', 1, 0, 0, 0, b'b', b'h', 1, b'u', b'.',
    ]);
    let v = parse(&p).unwrap();
    let items = dict_items(&v);
    assert_eq!(items[0].0.as_str(), Some("a"));
    let Value::List(l) = &items[0].1 else {
        panic!()
    };
    let l = l.borrow();
    assert!(
        matches!(l[..], [Value::Int(1), Value::Int(-2), Value::Float(f), Value::None, Value::Bool(true)] if f == 3.5)
    );
    assert_eq!(
        items[1].1.as_str(),
        Some("a"),
        "BINGET returns the memoised key"
    );
}

#[test]
fn memo_shares_mutable_containers() {
    // d = {}; x = [d, d]; then d gets an item after being memoised: both references see it.
    let p = [
        0x80, 2, b']', b'(', b'}', b'q', 0, b'h', 0, b'e', b'h', 0, b'X', 1, 0, 0, 0, b'k', b'K',
        7, b's', b'0', b'.',
    ];
    let v = parse(&p).unwrap();
    let Value::List(ref l) = v else { panic!() };
    for d in l.borrow().iter() {
        assert_eq!(dict_items(d).len(), 1);
    }
}

#[test]
fn unknown_classes_become_inert_objects() {
    // argparse.Namespace via NEWOBJ + BUILD, as torch.save writes `args`.
    let mut p = vec![0x80, 2, b'c'];
    p.extend(b"argparse\nNamespace\n");
    p.extend([b')', 0x81, b'}', b'X', 2, 0, 0, 0, b'l', b'r', b'G']);
    p.extend(0.001f64.to_be_bytes());
    p.extend([b's', b'b', b'.']);
    let v = parse(&p).unwrap();
    let Value::Object(ref o) = v else { panic!() };
    let o = o.borrow();
    assert_eq!(o.class, ("argparse".into(), "Namespace".into()));
    assert_eq!(dict_items(o.state.as_ref().unwrap()).len(), 1);
}

#[test]
fn very_deep_nesting_parses_and_drops_without_recursion() {
    // 300 000 lists, each appended into the one below it: a chain as deep as the stack allows values.
    let n = 300_000;
    let mut p = vec![b']'; n];
    p.extend(std::iter::repeat_n(b'a', n - 1));
    p.push(b'.');
    let v = parse(&p).unwrap();
    assert_eq!(v.kind(), "list");
    drop(v); // must not overflow the (2 MiB) test thread stack
             // a 200 000-deep tuple chain too
    let mut p = vec![b'N'];
    p.extend(std::iter::repeat_n(0x85, 200_000));
    p.push(b'.');
    assert_eq!(parse(&p).unwrap().kind(), "tuple");
}

#[test]
fn long_integers_are_sign_extended_and_bounded() {
    assert!(matches!(
        parse(&[0x8a, 2, 0x00, 0xff, b'.']).unwrap(),
        Value::Int(-256)
    ));
    assert!(matches!(parse(&[0x8a, 0, b'.']).unwrap(), Value::Int(0)));
    let e = parse(&[0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, b'.']).unwrap_err();
    assert!(e.msg.contains("64 bits"), "{e}");
}

#[test]
fn malformed_streams_are_errors_with_offsets() {
    let e = parse(&[0x80, 2, b'X', 10, 0, 0, 0, b'a']).unwrap_err();
    assert_eq!(e.pos, 2);
    assert!(e.msg.contains("truncated"), "{e}");
    assert!(parse(b".").unwrap_err().msg.contains("underflow"));
    assert!(parse(&[b'h', 3, b'.'])
        .unwrap_err()
        .msg
        .contains("memo entry 3"));
    assert!(parse(b"NNa.").unwrap_err().msg.contains("APPEND to a None"));
    let e = parse(&[0x80, 2, 0xff]).unwrap_err();
    assert!(e.msg.contains("0xff") && e.pos == 2, "{e}");
    assert!(parse(b"N").unwrap_err().msg.contains("truncated"));
    assert!(parse(b"(Nu.").unwrap_err().msg.contains("odd"));
    // a MARK hides what is below it from POP
    assert!(parse(b"N(0.").unwrap_err().msg.contains("underflow"));
}

#[test]
fn storages_and_tensor_references() {
    // _rebuild_tensor_v2((storage pid), 2, (2, 3), (3, 1), False, OrderedDict())
    let mut p = vec![0x80, 2, b'c'];
    p.extend(b"torch._utils\n_rebuild_tensor_v2\n");
    p.extend([b'(', b'(', b'X', 7, 0, 0, 0]);
    p.extend(b"storage");
    p.push(b'c');
    p.extend(b"torch\nHalfStorage\n");
    p.extend([b'X', 1, 0, 0, 0, b'0', b'X', 3, 0, 0, 0]);
    p.extend(b"cpu");
    p.extend([
        b'K', 9, b't', b'Q', b'K', 2, b'K', 2, b'K', 3, 0x86, b'K', 3, b'K', 1, 0x86, 0x89,
    ]);
    p.push(b'c');
    p.extend(b"collections\nOrderedDict\n");
    p.extend([b')', b'R', b't', b'R', b'.']);
    let v = parse(&p).unwrap();
    let Value::Tensor(ref t) = v else { panic!() };
    assert_eq!(t.storage.dtype, Dtype::F16);
    assert_eq!((t.storage.key.as_str(), t.storage.numel), ("0", 9));
    assert_eq!(
        (t.offset, t.size.clone(), t.stride.clone()),
        (2, vec![2, 3], vec![3, 1])
    );
}
