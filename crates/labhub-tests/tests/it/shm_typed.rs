//! Typed n-dimensional frames: element types, shapes within the largest one, schema checks at
//! open, runtime-typed ends, ndarray views.

use labhub::shm::{
    Bool, Channel, ChannelError, Complex32, Complex64, Dynamic, ElementType, Policy, ReadError,
};

use super::{TestChannel, WATCHDOG};

#[test]
fn every_element_type_goes_through_a_channel_in_place_with_its_shape() {
    fn round_trip<T: labhub::shm::Element + labhub::shm::Payload<Item = T> + PartialEq>(
        values: [T; 6],
    ) {
        let ch = TestChannel::new("elem");
        let mut p = Channel::new(&ch.name)
            .policy(Policy::ring(2))
            .frames::<T>(&[2, 3])
            .create()
            .unwrap();
        let mut c = Channel::new(&ch.name).frames::<T>(&[2, 3]).open().unwrap();
        assert_eq!((c.element_type(), c.max_shape()), (T::TYPE, &[2u64, 3][..]));
        p.publish(&values, &[2, 3]).unwrap();
        let f = c.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.held(), Some(&values[..]), "{}", T::TYPE);
        assert_eq!(f.shape(), &[2, 3]);
        assert_eq!(f.element_type(), T::TYPE);
        let report = labhub::shm::inspect(&ch.name).unwrap();
        assert_eq!(report.element, T::TYPE);
        assert_eq!(report.slot_size, 6 * T::TYPE.size());
    }
    round_trip::<u8>([1, 2, 3, 4, 5, 255]);
    round_trip::<i8>([-1, 2, -3, 4, -5, 127]);
    round_trip::<u16>([1, 2, 3, 4, 5, u16::MAX]);
    round_trip::<i16>([-1, 2, -3, 4, -5, i16::MIN]);
    round_trip::<u32>([1, 2, 3, 4, 5, u32::MAX]);
    round_trip::<i32>([-1, 2, -3, 4, -5, i32::MIN]);
    round_trip::<u64>([1, 2, 3, 4, 5, u64::MAX]);
    round_trip::<i64>([-1, 2, -3, 4, -5, i64::MIN]);
    round_trip::<f32>([0.5, -1.0, 3.25, 1e-7, f32::MAX, -0.0]);
    round_trip::<f64>([0.5, -1.0, 3.25, 1e-300, f64::MAX, -0.0]);
    round_trip::<Complex32>([Complex32::new(1.0, -2.0); 6]);
    round_trip::<Complex64>([Complex64::new(-1.5, 2.5); 6]);
    round_trip::<Bool>([true, false, true, true, false, false].map(Bool::from));
}

#[test]
fn a_frame_carries_its_own_shape_within_the_largest_one() {
    let ch = TestChannel::new("shape");
    let mut p = Channel::new(&ch.name)
        .policy(Policy::ring(4))
        .frames::<u16>(&[8, 8, 3])
        .create()
        .unwrap();
    let mut c = Channel::new(&ch.name).element::<u16>().open().unwrap();
    for (shape, fill) in [([8u64, 8, 3], 1u16), ([2, 5, 1], 2), ([0, 8, 3], 3)] {
        let mut slot = p.loan_shape(&shape).unwrap();
        assert_eq!(slot.len() as u64, shape.iter().product::<u64>());
        assert_eq!(slot.shape(), &shape);
        slot.fill(fill);
        slot.commit();
    }
    for (shape, fill) in [([8u64, 8, 3], 1u16), ([2, 5, 1], 2), ([0, 8, 3], 3)] {
        let f = c.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.shape(), &shape);
        let items = f.held().unwrap();
        assert_eq!(items.len() as u64, shape.iter().product::<u64>());
        assert!(items.iter().all(|&x| x == fill));
    }
}

#[test]
fn opening_with_another_element_type_shape_or_schema_is_refused_by_field() {
    let ch = TestChannel::new("schema");
    let _p = Channel::new(&ch.name)
        .policy(Policy::DoubleBuffer)
        .frames::<f32>(&[480, 640])
        .schema("lab.Camera", 3)
        .create()
        .unwrap();
    let cases = [
        (
            Channel::new(&ch.name).element::<u16>().open().map(|_| ()),
            "element",
            "u16",
            "f32",
        ),
        (
            Channel::new(&ch.name)
                .frames::<f32>(&[640, 480])
                .open()
                .map(|_| ()),
            "shape",
            "[640, 480]",
            "[480, 640]",
        ),
        (
            Channel::new(&ch.name)
                .dynamic(ElementType::F64, &[480, 640])
                .open()
                .map(|_| ()),
            "element",
            "f64",
            "f32",
        ),
        (
            Channel::new(&ch.name)
                .schema("lab.Camera", 4)
                .open()
                .map(|_| ()),
            "schema_version",
            "4",
            "3",
        ),
        (
            Channel::new(&ch.name)
                .schema("lab.Other", 3)
                .open()
                .map(|_| ()),
            "schema_name",
            "lab.Other",
            "lab.Camera",
        ),
    ];
    for (result, field, expected, found) in cases {
        match result.unwrap_err() {
            ChannelError::SchemaMismatch {
                field: f,
                expected: e,
                found: fo,
                ..
            } => assert_eq!((f, e.as_str(), fo.as_str()), (field, expected, found)),
            other => panic!("expected SchemaMismatch on {field}, got {other}"),
        }
    }
    match Channel::new(&ch.name)
        .policy(Policy::Latest)
        .open()
        .unwrap_err()
    {
        ChannelError::ConfigMismatch { field, .. } => assert_eq!(field, "policy"),
        other => panic!("{other}"),
    }
    // What matches opens; what is not asked is taken from the segment.
    let c = Channel::new(&ch.name)
        .frames::<f32>(&[480, 640])
        .schema("lab.Camera", 3)
        .policy(Policy::DoubleBuffer)
        .open()
        .unwrap();
    assert_eq!(c.schema(), Some(("lab.Camera", 3)));
    let any = Channel::new(&ch.name).open().unwrap();
    assert_eq!(any.element_type(), ElementType::F32);
}

#[test]
fn a_runtime_typed_end_chooses_its_element_type_at_run_time_and_sees_bytes() {
    let ch = TestChannel::new("dynamic");
    let element: ElementType = "i32".parse().unwrap();
    let mut p = Channel::new(&ch.name)
        .policy(Policy::ring(2))
        .dynamic(element, &[4])
        .create()
        .unwrap();
    let values: Vec<u8> = [1i32, -2, 3, -4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut typed = Channel::new(&ch.name).element::<i32>().open().unwrap();
    let mut bytes = Channel::new(&ch.name).open().unwrap();
    // Bytes: the length follows from shape and element size.
    assert!(p.publish(&values[..15], &[4]).is_err());
    p.publish(&values, &[4]).unwrap();
    let t = typed.next(Some(WATCHDOG)).unwrap();
    assert_eq!(t.held(), Some(&[1, -2, 3, -4][..]));
    drop(t);
    let f = bytes.next(Some(WATCHDOG)).unwrap();
    assert_eq!((f.element_type(), f.len()), (ElementType::I32, 16));
    assert_eq!(f.held(), Some(&values[..]));
    drop(f);
    let _: &labhub::shm::Consumer<Dynamic> = &bytes;
}

#[test]
fn a_lossy_frame_is_read_by_atomic_copy_or_closure_never_as_a_slice() {
    let ch = TestChannel::new("lossy-typed");
    let mut p = Channel::new(&ch.name)
        .policy(Policy::DoubleBuffer)
        .frames::<u32>(&[4])
        .create()
        .unwrap();
    let mut c = Channel::new(&ch.name).element::<u32>().open().unwrap();
    p.publish(&[10, 20, 30, 40], &[4]).unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert!(!f.is_held() && f.held().is_none());
    let sum = f.read(|s| (0..s.len()).filter_map(|i| s.get(i)).sum::<u32>());
    assert_eq!(sum, Ok(100));
    let mut buf = [0u32; 4];
    f.copy_to(&mut buf).unwrap();
    assert_eq!(buf, [10, 20, 30, 40]);
    assert!(matches!(
        f.copy_to(&mut [0u32; 3]),
        Err(ReadError::Corrupt { .. })
    ));
}

#[test]
fn ndarray_views_are_the_frames_in_place() {
    let ch = TestChannel::new("ndarray");
    let mut p = Channel::new(&ch.name)
        .policy(Policy::ring(2))
        .frames::<f64>(&[2, 3])
        .create()
        .unwrap();
    let mut c = Channel::new(&ch.name)
        .frames::<f64>(&[2, 3])
        .open()
        .unwrap();
    let mut slot = p.loan().unwrap();
    {
        let mut a = slot.array_mut();
        a[[0, 0]] = 1.0;
        a[[1, 2]] = 6.0;
    }
    slot.commit();
    let f = c.next(Some(WATCHDOG)).unwrap();
    let a = f.array().unwrap();
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!((a[[0, 0]], a[[1, 2]], a[[0, 1]]), (1.0, 6.0, 0.0));
    assert_eq!(f.to_array().unwrap(), a.to_owned());
}
