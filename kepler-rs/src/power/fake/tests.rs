use super::*;
use crate::power::counter::{Counter, Step};
use crate::power::units::Watts;
use crate::power::{PowerMeter, ReadError};

fn id(kind: ZoneKind, socket: u32) -> ZoneId {
    ZoneId { kind, socket }
}

fn two_socket_model() -> FakeRaplModel {
    let mut model = FakeRaplModel {
        sockets: 2,
        ..FakeRaplModel::default()
    };
    model.zones.push(FakeZoneModel {
        kind: ZoneKind::Uncore,
        idle: Watts(1.0),
        dynamic: Watts(5.0),
    });
    model.zones.push(FakeZoneModel {
        kind: ZoneKind::Psys,
        idle: Watts(30.0),
        dynamic: Watts(100.0),
    });
    model
}

/// Reads every zone once and feeds its counter; returns the deltas by zone.
fn step(meter: &mut RaplMeter, counters: &mut [Counter]) -> Vec<Step> {
    meter
        .read()
        .into_iter()
        .zip(counters.iter_mut())
        .map(|(r, c)| c.observe(r.energy.unwrap().0).unwrap())
        .collect()
}

fn counters(meter: &RaplMeter) -> Vec<Counter> {
    let zones = meter.zones();
    zones
        .iter()
        .map(|z| Counter::wrapping_at(z.max_energy.0))
        .collect()
}

#[test]
fn tree_is_read_by_the_production_meter() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = FakeRaplTree::create(tmp.path(), two_socket_model()).unwrap();
    let meter = tree.meter().unwrap();
    assert_eq!(meter.source(), "fake-rapl");
    let ids: Vec<_> = meter.zones().iter().map(|z| z.id).collect();
    let mut expected = tree.zone_ids();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(ids.len(), 2 * 4 + 1);
    assert!(ids.contains(&id(ZoneKind::Psys, 0)));
    assert!(ids.contains(&id(ZoneKind::Uncore, 1)));
    let class = tmp.path().join("class/powercap");
    assert!(fs::symlink_metadata(class.join("intel-rapl:1:2"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_to_string(class.join("intel-rapl:2/name")).unwrap(),
        "psys\n"
    );
    assert!(meter
        .zones()
        .iter()
        .all(|z| z.max_energy == Microjoules(1_000_000_000)));
    // Re-creating over an existing tree replaces it.
    let tree = FakeRaplTree::create(tmp.path(), FakeRaplModel::default()).unwrap();
    assert_eq!(tree.meter().unwrap().zones().len(), 3);
}

#[test]
fn deltas_equal_model_power_times_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tree = FakeRaplTree::create(tmp.path(), two_socket_model()).unwrap();
    let mut meter = tree.meter().unwrap();
    let mut counters = counters(&meter);
    assert!(step(&mut meter, &mut counters)
        .iter()
        .all(|s| *s == Step::First));
    let dt = Duration::from_millis(1500);
    for u in [0.0, 0.37, 1.0] {
        tree.advance(u, dt).unwrap();
        let steps = step(&mut meter, &mut counters);
        for (zone, s) in meter.zones().iter().zip(steps) {
            let zm = tree
                .model()
                .zones
                .iter()
                .find(|z| z.kind == zone.id.kind)
                .unwrap();
            let expected = tree.model().power_at(zm, u).for_duration(dt);
            assert_eq!(s, Step::Advanced(expected.0), "{} at u={u}", zone.id);
        }
    }
    // Package-0 saw 10 W, 24.8 W and 50 W for 1.5 s each.
    assert_eq!(
        tree.true_total(id(ZoneKind::Package, 0)),
        Microjoules(15_000_000 + 37_200_000 + 75_000_000)
    );
    assert_eq!(tree.true_total(id(ZoneKind::Package, 7)), Microjoules::ZERO);
    // Only the 3 zone files and 3 sub-zone dirs: every temp file was renamed into place.
    let zone_dir = tmp.path().join("class/powercap/intel-rapl:0");
    assert_eq!(fs::read_dir(zone_dir).unwrap().count(), 6);
}

#[test]
fn wraps_lose_no_energy() {
    let tmp = tempfile::tempdir().unwrap();
    let model = FakeRaplModel {
        max_energy_range: Microjoules(7_000_003),
        ..FakeRaplModel::default()
    };
    let mut tree = FakeRaplTree::create(tmp.path(), model).unwrap();
    let mut meter = tree.meter().unwrap();
    let mut counters = counters(&meter);
    step(&mut meter, &mut counters);
    let mut sums = vec![0u64; counters.len()];
    let mut wraps = 0;
    for i in 0..400u32 {
        let u = f64::from((i * 37) % 101) / 100.0;
        tree.advance(u, Duration::from_millis(50 + u64::from(i % 7) * 10))
            .unwrap();
        for (k, s) in step(&mut meter, &mut counters).into_iter().enumerate() {
            wraps += usize::from(matches!(s, Step::Wrapped(_)));
            sums[k] += s.delta();
        }
    }
    assert!(wraps >= 10, "only {wraps} wraps");
    for (zone, sum) in meter.zones().iter().zip(sums) {
        // The tree writes `total % (max + 1)`: the counter runs 0..=max, so the step from
        // max back to 0 is one microjoule, and a wrap delta is (max - prev) + 1 + value.
        assert_eq!(
            Microjoules(sum),
            tree.true_total(zone.id),
            "{} ({wraps} wraps in all)",
            zone.id
        );
    }
}

#[test]
fn zone_disappears_and_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tree = FakeRaplTree::create(tmp.path(), FakeRaplModel::default()).unwrap();
    let mut meter = tree.meter().unwrap();
    let pkg = id(ZoneKind::Package, 0);
    let mut counter = Counter::wrapping_at(1_000_000_000);
    counter
        .observe(meter.read()[0].energy.clone().unwrap().0)
        .unwrap();
    tree.remove_zone(pkg).unwrap();
    tree.advance(0.5, Duration::from_secs(2)).unwrap();
    let readings = meter.read();
    assert!(matches!(
        readings[0].energy,
        Err(ReadError::Vanished { .. })
    ));
    assert!(readings[1].energy.is_ok());
    tree.restore_zone(pkg).unwrap();
    let back = meter.read()[0].energy.clone().unwrap();
    assert_eq!(counter.observe(back.0).unwrap(), Step::Advanced(60_000_000));
    assert_eq!(tree.true_total(pkg), Microjoules(60_000_000));
    assert!(tree.remove_zone(id(ZoneKind::Psys, 0)).is_err());
}

#[test]
fn validation_lists_every_problem() {
    let model = FakeRaplModel {
        sockets: 0,
        zones: vec![
            FakeZoneModel {
                kind: ZoneKind::Package,
                idle: Watts(f64::NAN),
                dynamic: Watts(1.0),
            },
            FakeZoneModel {
                kind: ZoneKind::Core,
                idle: Watts(5.0),
                dynamic: Watts(-1.0),
            },
            FakeZoneModel {
                kind: ZoneKind::Core,
                idle: Watts(1.0),
                dynamic: Watts(1.0),
            },
        ],
        max_energy_range: Microjoules::ZERO,
        tick: Duration::ZERO,
    };
    let err = model.validate().unwrap_err();
    let msg = err.to_string();
    for needle in [
        "sockets: must be 1..=256, got 0",
        "zones[0] (package).idle: must be finite",
        "zones[1] (core).dynamic: must be finite and >= 0 W, got -1",
        "zones[2] (core): duplicate zone kind",
        "max_energy_range: must be > 0",
        "tick: must be > 0",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in {msg}");
    }
    assert_eq!(err.problems.len(), 6, "{msg}");

    let above = FakeRaplModel {
        zones: vec![
            FakeZoneModel {
                kind: ZoneKind::Package,
                idle: Watts(10.0),
                dynamic: Watts(10.0),
            },
            FakeZoneModel {
                kind: ZoneKind::Core,
                idle: Watts(5.0),
                dynamic: Watts(20.0),
            },
        ],
        ..FakeRaplModel::default()
    };
    let msg = above.validate().unwrap_err().to_string();
    assert!(
        msg.contains("above package (20 W) at utilisation 1"),
        "{msg}"
    );
    let orphan = FakeRaplModel {
        zones: vec![FakeZoneModel {
            kind: ZoneKind::Dram,
            idle: Watts(1.0),
            dynamic: Watts(0.0),
        }],
        ..FakeRaplModel::default()
    };
    assert!(orphan
        .validate()
        .unwrap_err()
        .to_string()
        .contains("no package zone"));
    let tiny = FakeRaplModel {
        max_energy_range: Microjoules(1_000),
        ..FakeRaplModel::default()
    };
    assert!(tiny
        .validate()
        .unwrap_err()
        .to_string()
        .contains("within one tick"));
    assert_eq!(FakeRaplModel::default().validate(), Ok(()));
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        FakeRaplTree::create(tmp.path(), model),
        Err(FakeRaplError::Model(_))
    ));
    let m = FakeRaplModel::default();
    assert_eq!(m.power_at(&m.zones[0], f64::NAN), Watts(10.0));
    assert_eq!(m.power_at(&m.zones[0], 2.0), Watts(50.0));
}

#[test]
fn threaded_fake_advances_and_cleans_up() {
    let model = FakeRaplModel {
        tick: Duration::from_millis(2),
        ..FakeRaplModel::default()
    };
    let t0 = Instant::now();
    let fake = FakeRapl::start(None, model, PathBuf::from("/proc")).unwrap();
    let root = fake.sysfs_root().to_path_buf();
    let mut meter = fake.meter().unwrap();
    let pkg = id(ZoneKind::Package, 0);
    let started = Instant::now();
    let mut last = 0;
    // Read while the thread writes: atomic writes mean never a garbage value.
    while started.elapsed() < Duration::from_millis(300) {
        let value = meter.read()[0].energy.clone().unwrap().0;
        assert!(value >= last, "{value} < {last}");
        last = value;
    }
    // At least idle power (10 W) for most of the 300 ms; at most full load (50 W) throughout.
    let truth = fake.true_total(pkg).0;
    let most = Watts(50.0).for_duration(t0.elapsed()).0;
    assert!(
        (1_000_000..=most).contains(&truth),
        "{truth} not in 1 J..={most} uJ"
    );
    assert!(last > 0 && last <= truth);
    drop(fake);
    assert!(!root.exists(), "temp tree removed on drop");
}

#[test]
fn start_in_a_given_dir_and_bad_procfs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fake-sys");
    let fake = FakeRapl::start(Some(&dir), FakeRaplModel::default(), "/proc".into()).unwrap();
    assert_eq!(fake.sysfs_root(), dir);
    assert_eq!(fake.meter().unwrap().zones().len(), 3);
    drop(fake);
    assert!(dir.join("class/powercap/intel-rapl:0/energy_uj").exists());
    let err =
        FakeRapl::start(None, FakeRaplModel::default(), tmp.path().join("no-proc")).unwrap_err();
    assert!(matches!(err, FakeRaplError::Host(_)), "{err}");
    assert!(err.to_string().contains("no-proc/stat"), "{err}");
}
