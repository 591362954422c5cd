mod decide;
mod observe;

fn main() {}
