use rkif_core::config::{Method, RunConfig};
use rkif_core::session::Session;
fn main() -> rkif_core::Result<()> {
    let mut cfg = RunConfig::preset("quick")?;
    cfg.method = Method::SeqLora;
    if let Ok(lr) = std::env::var("LR") {
        cfg.optim.lr = lr.parse().unwrap();
    }
    if let Ok(e) = std::env::var("EPOCHS") {
        cfg.optim.epochs = e.parse().unwrap();
    }
    if let Ok(e) = std::env::var("RANK") {
        cfg.model.lora.rank = e.parse().unwrap();
    }
    if let Ok(e) = std::env::var("TARGETS") {
        cfg.model.lora.targets = e.split(',').map(String::from).collect();
    }
    cfg.eval.max_examples_per_task = Some(40);
    if let Ok(d) = std::env::var("MODEL") {
        cfg.model.source = rkif_core::config::ModelSource::Local { path: d.into() };
    }
    if std::env::var("SELECT").is_ok() {
        cfg.eval.select = rkif_core::config::Selection::Last;
    }
    if let Ok(o) = std::env::var("ORDER") {
        cfg.data.order = Some(o);
    }
    if let Ok(m) = std::env::var("METHOD") {
        cfg.method = Method::parse(&m)?;
    }
    println!("{}", cfg.to_toml()?);
    let mut s = Session::new(cfg)?;
    s.set_step_hook(Box::new(|t, st, _p, l| {
        if st % 10 == 0 {
            eprintln!("task {t} step {st} loss {l:.3}")
        }
    }));
    let ntasks: usize = std::env::var("NTASKS")
        .ok()
        .map(|v| v.parse().unwrap())
        .unwrap_or(1);
    for _ in 0..ntasks {
        let sum = s.train_task()?;
        let row = s.evaluate()?;
        println!("{:?} {:?}", sum.name, row.accuracy);
        for (i, smp) in &row.samples {
            println!("  task {i}: {:?}", smp);
        }
    }
    Ok(())
}
