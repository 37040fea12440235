//! The status page as people meet it: axe-core (every rule, best practices included) in
//! headless Chromium, light and dark, at a 390 px phone width, and html-validate's
//! `standard` preset, on `/` and on the page of each kind of job (classic, Resource
//! Manager, Data Box appliance, Data Box Disk).
//!
//! axe-core and html-validate come from npm: `.ci/run` installs them into
//! `target/web-checks` and sets IEWATCH_REQUIRE_WEB_CHECKS; elsewhere these tests say
//! once what to run and pass without running.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{
    browser::{chromium, headless},
    scenario, start_simulator, RunningDaemon,
};

/// The npm packages' directory (`node_modules`), when axe-core and html-validate are there.
fn web_checks() -> Option<PathBuf> {
    let dir = std::env::var_os("IEWATCH_WEB_CHECKS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-checks/node_modules"),
        PathBuf::from,
    );
    let there = dir.join("axe-core/axe.min.js").is_file()
        && dir.join("html-validate/bin/html-validate.mjs").is_file();
    if !there {
        common::not_run(
            "IEWATCH_REQUIRE_WEB_CHECKS",
            "the accessibility and markup checks of the status page (tests/accessibility.rs): \
             axe-core and html-validate are not installed; `npm install --prefix \
             target/web-checks axe-core@4.14 html-validate@10` runs them",
        );
        return None;
    }
    Some(dir)
}

/// What axe and the page's own measurements say about `html` in Chromium at 390 px:
/// the violations (id, impact, first target) and the document's scroll width.
fn axe(
    browser: &str,
    profile: &std::path::Path,
    modules: &std::path::Path,
    html: &str,
    dark: bool,
) -> (Vec<String>, u64) {
    let axe = std::fs::read_to_string(modules.join("axe-core/axe.min.js")).unwrap();
    let mut page = html.to_owned();
    if dark {
        // The page follows the reader's colour scheme; this is its dark rendering.
        page = page.replace("color-scheme:light dark", "color-scheme:dark");
    }
    // Chromium's window is at least 500 px wide, so the page is read in a 390 px frame
    // (srcdoc: same origin, so the frame can hand its verdict to the outer document).
    let runner = format!(
        "<script>{axe}</script><script>\
axe.run(document,{{resultTypes:['violations']}}).then(r=>{{\
const out=parent.document.createElement('pre');out.id='verdict';\
out.textContent=JSON.stringify({{width:document.documentElement.scrollWidth,inner:window.innerWidth,\
violations:r.violations.map(v=>v.id+' ('+v.impact+'): '+v.nodes[0].target.join(' ')+' '+v.nodes[0].failureSummary)}});\
parent.document.body.appendChild(out);}});</script>"
    );
    page = page.replacen("</body>", &format!("{runner}</body>"), 1);
    let literal = serde_json::to_string(&page).unwrap().replace("</", "<\\/");
    let outer = format!(
        "<!doctype html><html><body><script>\
const f=document.createElement('iframe');f.style.cssText='width:390px;height:844px;border:0';\
f.srcdoc={literal};document.body.appendChild(f);</script></body></html>"
    );
    let file = profile.with_extension(if dark { "dark.html" } else { "light.html" });
    std::fs::write(&file, outer).unwrap();
    let dom = headless(
        browser,
        profile,
        &format!("file://{}", file.display()),
        &[
            "--dump-dom",
            "--window-size=390,844",
            "--virtual-time-budget=20000",
        ],
    );
    let start = dom.find("<pre id=\"verdict\">").expect("axe ran") + "<pre id=\"verdict\">".len();
    let end = dom[start..].find("</pre>").unwrap() + start;
    let text = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&amp;", "&");
    let verdict: serde_json::Value = serde_json::from_str(&text).unwrap();
    let violations = verdict["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(verdict["inner"], 390, "the frame is a phone's width");
    (violations, verdict["width"].as_u64().unwrap_or(0))
}

/// html-validate's `standard` preset on `html`: its report, empty when clean.
fn validate(modules: &std::path::Path, dir: &std::path::Path, html: &str) -> String {
    let file = dir.join("page.html");
    std::fs::write(&file, html).unwrap();
    let settings = dir.join("htmlvalidate.json");
    std::fs::write(&settings, r#"{"extends": ["html-validate:standard"]}"#).unwrap();
    let output = std::process::Command::new("node")
        .arg(modules.join("html-validate/bin/html-validate.mjs"))
        .arg("--formatter=text")
        .arg("--config")
        .arg(&settings)
        .arg(&file)
        .output()
        .expect("node runs html-validate");
    if output.status.success() {
        return String::new();
    }
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_kind_passes_axe_light_and_dark_fits_a_phone_and_validates() {
    let Some(modules) = web_checks() else { return };
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut all = scenario("import-lifecycle.toml");
    for other in ["databox-appliance.toml", "databox-disk.toml"] {
        all.jobs.extend(scenario(other).jobs);
    }
    let sim = start_simulator(all, dir.path()).await;
    // Mid-copy first, then a day on: the pages show errors, warnings and the jobs that
    // need someone (completed with errors, action required), in their colours.
    sim.set_time(Some(Duration::from_secs(3 * 86_400 + 12 * 3600)));
    let addr = format!("127.0.0.1:{}", common::free_port());
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\n\n[http]\nlisten = \"{addr}\"\n\n{}\n{}\n{}\n\
             [[job]]\naccount = \"sim\"\nname = \"MySampleJob\"\n\n\
             [[job]]\naccount = \"arm\"\nname = \"MySampleJob\"\n\n\
             [[job]]\naccount = \"portal\"\nname = \"databox-order-7\"\n\n\
             [[job]]\naccount = \"portal\"\nname = \"disk-order-3\"\n",
            dir.path().join("iewatch.db").display(),
            sim.account_block("sim"),
            sim.arm_account_block("arm"),
            sim.databox_account_block("portal"),
        ),
    )
    .unwrap();
    let daemon = RunningDaemon::start(&config).await;
    let pages = [
        "/",
        "/jobs/sim/MySampleJob",
        "/jobs/arm/MySampleJob",
        "/jobs/portal/databox-order-7",
        "/jobs/portal/disk-order-3",
    ];
    for path in pages {
        let seen = common::wait_for(Duration::from_secs(20), || async {
            common::http_get(&addr, path)
                .await
                .is_some_and(|(status, body)| status == 200 && body.contains("<tr"))
        })
        .await;
        assert!(seen, "{path} served");
    }
    sim.set_time(Some(Duration::from_secs(5 * 86_400))); // a drive CompletedMoreInfo
    let warned = common::wait_for(Duration::from_secs(20), || async {
        common::http_get(&addr, "/jobs/sim/MySampleJob")
            .await
            .is_some_and(|(_, body)| body.contains("class=\"event warning\""))
    })
    .await;
    assert!(warned, "a warning row");
    sim.set_time(Some(Duration::from_secs(7 * 86_400)));
    let attention = common::wait_for(Duration::from_secs(20), || async {
        common::http_get(&addr, "/").await.is_some_and(|(_, body)| {
            body.contains("completed with errors") && body.contains("action required")
        })
    })
    .await;
    assert!(attention, "{:?}", common::http_get(&addr, "/").await);
    let mut served = Vec::new();
    for path in pages {
        served.push((path, common::http_get(&addr, path).await.unwrap().1));
    }
    assert!(
        served
            .iter()
            .any(|(_, html)| html.contains("class=\"event error\""))
            && served
                .iter()
                .any(|(_, html)| html.contains("class=\"event warning\"")),
        "error and warning rows are on the pages checked"
    );
    assert!(
        served
            .iter()
            .any(|(_, html)| html.contains("<h2>What failed</h2>")
                && html.contains("<caption>Drive 9WM3NZFS: 3 files failed")),
        "the table of what failed is on the pages checked"
    );
    daemon.stop().await;

    let profile = dir.path().join("chromium");
    let mut found = Vec::new();
    for (path, html) in &served {
        for dark in [false, true] {
            let (violations, width) = axe(browser, &profile, &modules, html, dark);
            let scheme = if dark { "dark" } else { "light" };
            found.extend(violations.iter().map(|v| format!("{path} {scheme}: {v}")));
            if width > 390 {
                found.push(format!("{path} {scheme}: {width} px wide at 390 px"));
            }
        }
        let report = validate(&modules, dir.path(), html);
        if !report.is_empty() {
            found.push(format!("{path}: html-validate:\n{report}"));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    screenshots(browser, &profile, &served);
}

/// Each page as a desktop browser shows it, light, and the front page dark too, in
/// `target/status-page/` with the page's HTML (the README's pictures are these).
fn screenshots(browser: &str, profile: &std::path::Path, served: &[(&str, String)]) {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page");
    if std::fs::create_dir_all(&shots).is_err() {
        return; // A read-only checkout (the tests as another user): nothing to keep.
    }
    for (i, (path, html)) in served.iter().enumerate() {
        let name = match *path {
            "/" => "front".to_owned(),
            other => other.trim_start_matches("/jobs/").replace('/', "-"),
        };
        let mut kinds = vec![(name.clone(), html.clone())];
        if i == 0 {
            kinds.push((
                format!("{name}-dark"),
                html.replace("color-scheme:light dark", "color-scheme:dark"),
            ));
        }
        for (name, html) in kinds {
            let file = shots.join(format!("{name}.html"));
            let shot = shots.join(format!("{name}.png"));
            if std::fs::write(&file, &html).is_err() {
                return;
            }
            headless(
                browser,
                profile,
                &format!("file://{}", file.display()),
                &[
                    "--window-size=1000,900",
                    &format!("--screenshot={}", shot.display()),
                ],
            );
            let png = std::fs::read(&shot).unwrap_or_default();
            assert!(
                png.starts_with(b"\x89PNG") && png.len() > 5_000,
                "{name}: {} bytes",
                png.len()
            );
        }
    }
}
