"""What the load tools buy: plentiful products only, so a run measures the flow, not a sell-out."""

CATALOGUE = {
    "mouse": 29.99,
    "keyboard": 89.99,
    "monitor": 299.99,
    "headphones": 199.99,
    "usb_cable": 9.99,
}
DECLINED_CARD = "4000000000000002"
