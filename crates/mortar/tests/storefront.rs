//! The shop's storefront in a real browser: headless Chromium, through the
//! gateway, against the whole shop (catalog ×2, identity, ordering,
//! order-history and the Python notifier).
//!
//! The screenshot lands in `target/test-output/storefront.png`.

use mortar_test_support::browser::Browser;
use mortar_test_support::shop;
use serde_json::json;

/// A new customer signs up, orders a product, sees the order under "my
/// orders" and its notification, and still sees both after a reload.
#[test]
fn a_customer_signs_up_orders_and_sees_the_order_in_my_orders() {
    let test = "a_customer_signs_up_orders_and_sees_the_order_in_my_orders";
    let Some(browser) = Browser::launch(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = shop::start(dir.path(), "browsershop");
    let gateway = node.gateway_url();

    browser.goto(&format!("{gateway}/shop"));
    browser.wait_for(
        "the catalog's products in the table",
        "return document.querySelectorAll('#products tbody tr button.order').length > 0;",
    );
    assert!(
        browser.text("#mine").is_empty(),
        "\"my orders\" stays hidden until the customer logs in"
    );

    browser.fill("#username", "ada");
    browser.fill("#password", "correct horse battery");
    browser.click("#signup");
    browser.wait_visible("#signed-in");
    assert_eq!(browser.text("#who"), "ada");

    let sku = browser.execute(
        "return document.querySelector('#products tbody tr').dataset.sku;",
        vec![],
    );
    browser.click("#products tbody tr button.order");
    let placed = browser.wait_for(
        "the order to be placed",
        "const m = document.getElementById('message').textContent; \
         const found = /^Order (\\S+) placed\\.$/.exec(m); \
         return found ? found[1] : null;",
    );
    let order = placed.as_str().expect("the order id is text").to_owned();
    assert!(!order.is_empty(), "the page names the placed order");

    let in_my_orders = "return Array.from(document.querySelectorAll('#orders tr.order-row')) \
         .some(r => r.dataset.id === arguments[0]);";
    let notified = "return Array.from(document.querySelectorAll('#notifications li')) \
         .some(li => li.textContent.includes(arguments[0]));";
    let wait_until = |what: &str, script: &str| {
        browser.wait_for(
            what,
            &format!(
                "return (function() {{ {} }}).apply(null, [{}]);",
                script,
                json!(order)
            ),
        );
    };
    wait_until("the order under \"my orders\"", in_my_orders);
    wait_until("the notification for the order", notified);
    let shot = browser.screenshot("storefront");
    eprintln!(
        "storefront screenshot: {} (order {order}, sku {sku})",
        shot.display()
    );

    browser.goto(&format!("{gateway}/shop"));
    browser.wait_visible("#signed-in");
    wait_until("the order under \"my orders\" after a reload", in_my_orders);
    assert_eq!(
        browser.text("#message"),
        "",
        "no error is shown after the reload"
    );
}
