use tokio::task::JoinHandle;

/// Background actors that stop when the set is dropped (a test's simulators end with the test).
#[derive(Default)]
pub struct Tasks {
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.handles.push(tokio::spawn(task));
    }

    pub fn extend(&mut self, other: Tasks) {
        let mut other = other;
        self.handles.append(&mut other.handles);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}
