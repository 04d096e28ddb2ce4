use segctl::firewall::{synth, HostSettings, compile_cached, CompileCache};
fn main() {
    let (policies, mut inv) = synth::scenario(100, 2);
    let h = HostSettings::default();
    let mut cache = CompileCache::new();
    let _ = compile_cached(&policies, &inv, &h, &mut cache);
    for i in 0..300 {
        let mut c = inv.containers[5].clone(); c.id = format!("n{i}"); c.endpoints[0].ipv4 = Some(synth::address(0, 1, 7));
        inv.containers.push(c);
        let _ = compile_cached(&policies, &inv, &h, &mut cache);
        inv.containers.pop();
    }
}
